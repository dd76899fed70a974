"""The stage layer: one function per step of the labelling loop, each taking the recipe (and the round).

`autolabel.pipeline` sequences and resumes them (``autolabel run``); `autolabel.commands` parse arguments and
call them (``autolabel train | label | select | ingest | fuse | supervise``). Below this layer nothing takes a
`Recipe`: the stages unpack it into the section configs, paths and opened objects the library functions
take. Modules:

- `steps`: the stages (prepare_data, supervise, fuse, train, label, evaluate, export, select, ingest, report);
- `inputs`: what a stage opens from the recipe (frames, cache, fused labels, checkpoint and manifest paths);
- `checks`: checks that need no work (dataset folder, annotator, backbone file), run before anything is written.
"""

from .steps import (
    Selection,
    evaluate,
    evaluate_checkpoint,
    evaluate_checkpoint_networks,
    export,
    fuse,
    ingest,
    ingest_folder,
    label,
    oracle_delivery,
    prepare_data,
    report,
    score_round,
    select,
    supervise,
    train,
)

__all__ = [
    "Selection",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_checkpoint_networks",
    "export",
    "fuse",
    "ingest",
    "ingest_folder",
    "label",
    "oracle_delivery",
    "prepare_data",
    "report",
    "score_round",
    "select",
    "supervise",
    "train",
]
