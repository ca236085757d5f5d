"""Input: readers per format (NIfTI, MetaImage, cfg), input limits, discovery of patients.

Readers know nothing of the model or the measurements; they return arrays with their grid and
raise :class:`echo_batch.errors.InputError` naming the file for anything they cannot trust.
"""
