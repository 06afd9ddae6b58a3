for value in (10, 60, 30, 70, 5, 70, 100, 90):
    print(f"PROGRESS: {value} at {value}", flush=True)
