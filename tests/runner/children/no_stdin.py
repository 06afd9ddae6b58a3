"""Never reads stdin (the runner is writing a payload larger than a pipe buffer)."""
print("PROGRESS: 100 never read my input", flush=True)
