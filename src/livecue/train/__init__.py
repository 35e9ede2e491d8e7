"""Training: the LIVE fine-tuning recipe on accelerate (single device to multi-node), resumable.

* :mod:`.recipe`: :func:`~livecue.train.recipe.train`, in named phases (setup, resume, train step, evaluate, save,
  finish) over one ``TrainState``;
* :mod:`.trainable`: the model as training sees it (LoRA, what trains, parameter groups);
* :mod:`.checkpoint`: checkpoints written atomically with a manifest, and choosing the one to resume from;
* :mod:`.verify`: the checks a checkpoint passes before a resume uses it; :mod:`.manifest`: what it records;
* :mod:`.logging`: ``log.jsonl``, the experiment trackers (``train.report_to``), the run header and progress.
"""
