"""The stages: resumable loops over run folders, one module each.

    generate  prompts -> policy samples -> candidate pairs
    label     pairs -> judgments -> preference dataset          (rlaif label; also the audit's and the loop's)
    score     responses -> pointwise scores -> derived pairs    (rlaif score)
    rank      K candidates -> all pairs judged -> Bradley-Terry  (rlaif rank)
    revise    critique -> revision rounds -> SFT and preference datasets (rlaif revise)
    run       generate + label in one folder                    (rlaif run)
    validate  every judge and config checked without a model    (rlaif validate)

Each takes records in and a run folder, writes only to that folder, and on a rerun does only what is
missing, so a shard of any stage's input can run anywhere and the folders be merged. Imports the layers
below: store, judging, backends, config and the shared modules.
"""
