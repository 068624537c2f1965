"""Which encoder and which float arithmetic: the CPU's facts, the policy, the guard, --precision resolved once."""
