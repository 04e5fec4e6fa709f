"""A Python process for taskfarm's `python` kind (examples/specs/python_sweep.toml).

`load` runs once per worker slot (one interpreter per thread or MPI rank); its result
comes back to every call of `run` as `state`. `run` is called once per process with the
parameters as keyword arguments and returns the output's fields.
"""
import math


def load(table_size):
    # Start-up work every process shares: done once per interpreter, not per process.
    return [math.sin(i / table_size) for i in range(table_size)]


def run(alpha, beta, run, state):
    # `run` is the run number (0 .. runs - 1); use it as a seed.
    index = (alpha * 7 + beta * 13 + run) % len(state)
    return {"product": alpha * beta, "wave": state[index], "ratio": alpha / beta if beta else math.inf}
