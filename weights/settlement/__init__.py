"""Settlement (结算): policy, case points, point value and payments, the ledger, whole runs,
the hospital simulation and the patient's side of a stay."""
