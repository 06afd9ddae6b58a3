print("PROGRESS: 100", flush=True)
print("RESULT: {not json at all", flush=True)
