"""The small history of docs/dip.md (worked by hand there), shared by the DIP tests."""
import pyarrow as pa

#: (id, year, diagnoses, procedures, total cost)
HISTORY_ROWS = [
    ("a1", 2023, "K80.100", "51.2300", 8000), ("a2", 2023, "K80.101x001", "51.2300", 10000),
    ("a3", 2024, "K80.100", "51.2300", 10000),
    ("a4", 2025, "K80.100", "51.2300", 11000), ("a5", 2025, "K80.100", "51.2300", 13000),
    ("a6", 2025, "K80.100", "51.2300|99.2100", 12000), ("a7", 2025, "K80.100", "51.2300", 60000),
    ("b1", 2024, "K80.100", "", 3000), ("b2", 2024, "K80.100", "", 5000),
    ("b3", 2025, "K80.100", "", 4400), ("b4", 2025, "K80.100", "", 5400), ("b5", 2025, "K80.100", "99.2100", 4900),
    ("c1", 2025, "K80.100", "51.2200", 15000), ("c2", 2025, "K80.100", "51.2200", 17000),
    ("d1", 2025, "K80.000", "51.2300", 10000),
    ("e1", 2024, "K80.200", "", 4000), ("e2", 2025, "K80.200", "", 4000),
    ("f1", 2024, "K80.100", "51.1000", 6000), ("f2", 2024, "K80.100", "51.1000", 8000),
]

#: the example's policy (docs/dip.md): everything else at the defaults
POLICY = {"min_cases": 3, "trim_sd": 2.0, "excluded_procedures": ["99.2"]}

POLICY_TOML = """
[dip]
min_cases = 3
trim_sd = 2.0
excluded_procedures = ["99.2"]
"""


def history() -> pa.Table:
    r = HISTORY_ROWS
    return pa.table({"id": [x[0] for x in r], "year": [x[1] for x in r], "diagnoses": [x[2] for x in r],
                     "procedures": [x[3] for x in r], "total_cost": [float(x[4]) for x in r]})
