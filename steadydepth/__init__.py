"""SteadyDepth: temporally stable, metric video depth.

Application package: configuration, CLI, video decoding, teachers and the synthetic benchmark.
The model lives in `smoother/`, its evaluation in `evaluation/`, the depth stores in `storage/`, orchestration in
`tasks/` and `flows/`.
"""

__version__ = "0.1.0"
