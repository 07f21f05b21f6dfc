"""`rig synth`: CheXphoto's synthetic transformations of digital x-rays, reproducible and resumable.

One module per perturbation family (tone, blur, geometry, glare, moire, film, studio), the registry
in `base`, one image's work in `job`, the resumable output journal in `journal`, and the runner over
a local process pool or a Dask cluster in `runner`.
"""
