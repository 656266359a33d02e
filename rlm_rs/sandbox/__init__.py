"""The sandbox: runs one step of model-written Python against a corpus.

See rlm_rs/sandbox/executor.py (the in-process step executor, the policy
layers) and rlm_rs/sandbox/pool/ (the hardened process pool, the OS layers).
"""
