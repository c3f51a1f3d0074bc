"""The HCL (reconstruction) names at their place before issue 23; the recipe now lives in `keras_iqa.tasks.hcl` (configs,
stages, `run_all`), the stage hand-off in `keras_iqa.tasks.hcl_handoff`, the two-optimizer schedules and the head-correlation
log in `keras_iqa.training.hcl_callbacks`, the held-out restoration check in `keras_iqa.evaluation.restoration`.

Example:
>>> from keras_iqa.config import load_config
>>> from keras_iqa.training.hcl import HCLTrainConfig, run_all
>>> cfg = load_config(HCLTrainConfig, sets=["synthetic.epochs=5"])
>>> cfg.synthetic.epochs
5
>>> import keras_iqa.tasks.hcl
>>> run_all is keras_iqa.tasks.hcl.run_all
True
"""

from keras_iqa.evaluation.restoration import restoration_report, to_restoration_targets  # noqa: F401
from keras_iqa.tasks.hcl import (FINETUNE_LOSSES, AblationConfig, FinetuneStageConfig, HCLTrainConfig,  # noqa: F401
                                 RestorationStageConfig, SyntheticStageConfig, compile_finetune, compile_synthetic,
                                 evaluate_hcl, finetune_lrs, fit_finetune, fit_restoration, fit_synthetic, run_all,
                                 train_finetune, train_restoration, train_synthetic)
from keras_iqa.tasks.hcl_handoff import (STAGE_DIRS, STAGES, init_finetune, init_synthetic,  # noqa: F401
                                         load_stage_model, transfer_weights)
from keras_iqa.tasks.hcl_handoff import model_cfg_from as _model_cfg_from  # noqa: F401
from keras_iqa.training.hcl_callbacks import (GroupLRSchedule, HeadCorrelationLogger, freeze_then_low_lr,  # noqa: F401
                                              step_decay)
