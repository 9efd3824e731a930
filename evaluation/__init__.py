"""Evaluation of depth videos read from depth stores: the metric suite, the baselines, the promotion gate, the
evaluation driver and its report. Independent of the model package: it reads stores, never the smoother.
"""
