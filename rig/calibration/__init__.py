"""Calibration: measuring a rig from photos of a board on its own monitor.

board.py      the ChArUco board and finding it in a photo
solve.py      geometry from detections: intrinsics, camera pose, arm pivot and angles, screen, lamps
angles.py     pulse -> angle (the one conversion) and fitting it
procedures.py what `rig calibrate` does: drive the rig, photograph the board, hand the photos to solve.py
file.py       the calibration file beside the rig file, its hardware fingerprint
degrees.py    poses written in degrees resolved to pulses, soft limits applied
"""
