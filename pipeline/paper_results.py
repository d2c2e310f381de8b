"""The paper's reported numbers (Tables II and III, "DR (%)"), for reference rows in LaTeX only.

They are never mixed with measured rows: the tables print them in their own block, marked
"reported in the paper". Each row maps a column (``clean``, an attack name, ``avg``) to its value,
so a table over any subset or order of attacks puts every value under its own column.
"""

from __future__ import annotations

#: the paper's columns, in its order (its Avg is the mean of the other eight)
COLUMNS = ("clean", "fgsm", "pgd", "ssah", "deepfool", "bim", "cw", "jsma", "avg")


def _row(*values: float) -> dict[str, float]:
    return dict(zip(COLUMNS, values, strict=True))


TABLE_II: dict[str, dict[str, float]] = {
    "ESMAF [21]": _row(70.8, 52.7, 67.5, 62.9, 39.7, 35.9, 37.2, 41.0, 51.0),
    "SSAE [20]": _row(74.0, 58.5, 67.0, 69.2, 41.5, 39.4, 41.6, 41.3, 54.1),
    "sim-DNN [18]": _row(76.2, 60.7, 72.3, 71.0, 44.8, 46.7, 49.9, 50.2, 59.0),
    "DTBA [19]": _row(79.2, 59.2, 75.5, 74.9, 51.4, 53.8, 56.0, 59.9, 63.8),
    "RR [22]": _row(86.5, 62.7, 79.0, 76.2, 67.1, 58.7, 60.9, 71.3, 70.3),
    "TiCo [31]": _row(74.5, 53.6, 68.6, 65.2, 45.1, 44.5, 43.1, 57.9, 56.6),
    "MAE [32]": _row(82.2, 59.6, 75.5, 74.4, 54.2, 50.3, 51.4, 62.8, 63.8),
    "Mugs [33]": _row(83.4, 57.2, 75.9, 76.7, 56.0, 51.1, 50.8, 64.3, 64.4),
    "Unicom [34]": _row(86.4, 59.8, 76.2, 79.3, 61.0, 55.5, 58.4, 68.2, 68.1),
    "DINOv2 [35]": _row(87.5, 61.6, 79.4, 78.3, 64.5, 57.1, 57.9, 71.6, 69.7),
    "SimCat [24]": _row(85.1, 58.0, 75.2, 77.0, 56.4, 56.5, 55.3, 69.6, 66.6),
    "DRR [23]": _row(87.2, 64.8, 79.6, 78.2, 66.9, 60.7, 60.1, 70.3, 71.0),
    "Ours (paper)": _row(87.9, 65.9, 80.0, 79.7, 69.1, 61.5, 61.8, 72.4, 72.3),
}

TABLE_III: dict[str, dict[str, float]] = {
    "ESMAF [21]": _row(61.4, 40.6, 58.0, 48.2, 22.1, 20.6, 25.6, 35.8, 39.0),
    "SSAE [20]": _row(63.0, 42.9, 59.1, 54.7, 29.2, 26.5, 33.0, 36.0, 43.1),
    "sim-DNN [18]": _row(64.5, 42.5, 60.4, 57.2, 34.9, 30.5, 34.8, 38.1, 45.4),
    "DTBA [19]": _row(68.9, 42.0, 65.7, 65.8, 35.3, 31.0, 37.2, 40.1, 48.3),
    "RR [22]": _row(74.6, 50.8, 70.2, 72.7, 43.8, 34.3, 49.6, 58.9, 56.9),
    "TiCo [31]": _row(74.4, 53.9, 68.2, 64.8, 45.8, 45.1, 44.0, 57.2, 56.7),
    "MAE [32]": _row(82.6, 59.4, 75.5, 73.9, 54.6, 50.5, 51.2, 62.9, 63.8),
    "Mugs [33]": _row(83.3, 57.0, 75.2, 76.9, 55.7, 50.1, 51.4, 63.9, 64.2),
    "Unicom [34]": _row(86.0, 59.6, 76.2, 78.8, 61.2, 55.4, 58.5, 68.0, 68.0),
    "DINOv2 [35]": _row(87.6, 62.0, 79.2, 78.4, 64.8, 57.2, 57.5, 71.5, 70.0),
    "SimCat [24]": _row(83.0, 56.7, 73.1, 73.8, 55.6, 55.2, 53.9, 69.0, 65.0),
    "DRR [23]": _row(87.0, 64.0, 80.1, 78.1, 65.7, 60.3, 59.4, 70.9, 70.7),
    "Ours (paper)": _row(87.9, 64.1, 79.0, 78.6, 67.5, 59.8, 59.9, 69.8, 70.8),
}


def reported_cells(row: dict[str, float], columns: list[str]) -> list[float]:
    """A reported row's values under ``columns`` (NaN where the paper has none); its Avg only when
    the table shows exactly the paper's eight columns, since it averages those."""
    full = set(columns) - {"avg"} == set(COLUMNS) - {"avg"}
    return [row[c] if c in row and (c != "avg" or full) else float("nan") for c in columns]
