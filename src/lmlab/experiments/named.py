EXPERIMENTS = {}
def run_experiment(*a, **k): raise NotImplementedError
