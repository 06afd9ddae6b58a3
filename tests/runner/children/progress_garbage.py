lines = [
    "PROGRESS: abc",
    "PROGRESS: 150",
    "PROGRESS: -5",
    "PROGRESS: 1e9",
    "PROGRESS:",
    "PROGRESS: ",
    "PROGRESS: nan",
    "PROGRESS: 12.5 valid one",
    "PROGRESS: 100.5",
    "PROGRESS 40 missing colon",
    "  PROGRESS: 45 indented",
    "PROGRESS: 50",
]
print("\n".join(lines), flush=True)
