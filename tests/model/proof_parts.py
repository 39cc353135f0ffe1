"""What the GPU proofs' parts hold when every greedy figure is within its bound: the
reports' tests start from it and spoil one figure at a time."""

GREEDY_WITHIN_BOUNDS = {
    "max_abs_logprob_diff": 1e-5,
    "max_mean_kl": 1e-9,
    "min_greedy_agreeing_steps": 64,
    "median_greedy_agreeing_steps": 64,
    "min_greedy_agreeing_steps_ties_within_tolerance": 64,
}
