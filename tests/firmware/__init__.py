# A package so that this folder's conftest.py is imported as "firmware.conftest" and does not
# shadow tests/conftest.py, which other test modules import as plain "conftest".
