"""Model families: configuration, parameter layout, forward and explicit backward.

Model code is written once against a backend's op interface (py_engine.backends) and never
touches WebGPU objects: on the NumPy backend it computes eagerly, on the GPU backend the same
calls record a program that is replayed per step.
"""
