"""Execution: run options, the chunk function (load -> segment -> measure -> records), the serial
run and the Dask cluster. Nothing here knows Prefect; ``flows/`` wires these into a flow.
"""
