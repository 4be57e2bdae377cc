# What every pit-det config adds to mmdet's runtime, whatever its head: pit_det imported (its models, runner and
# checkpoint sources registered) and the runner that checks data, classes, evaluator files, weights and the model's
# level settings before building anything (docs/training.md).
custom_imports = dict(imports=['pit_det'], allow_failed_imports=False)
runner_type = 'CheckedRunner'
