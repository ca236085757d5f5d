"""Quality: anatomical QC flags from one sourced threshold table, segmentation metrics against
expert masks, EF agreement statistics.
"""
