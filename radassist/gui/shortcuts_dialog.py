"""Help > Keyboard shortcuts: every key the worklist and the order view understand."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout

SHORTCUTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Deciding (order view)", [
        ("Enter", "Accept the selected suggestion (top-1 unless it needs review)"),
        ("1 / 2 / 3", "Decide with suggestion 1, 2 or 3"),
        ("↑ / ↓", "Move the selection among the suggestions"),
        ("Type letters", "Search the whole catalog by code, name or indication (override)"),
        ("↑ / ↓ then Enter", "Pick a search result and confirm the override"),
        ("Esc", "Cancel the search"),
        ("Ctrl+K", "Search the catalog"),
        ("+", "Add the selected suggestion or search result as one more protocol (up to 3); Enter saves all"),
        ("Backspace", "Remove the last added protocol"),
        ("Ctrl+R", "Return the order to the referrer with a question"),
        ("Ctrl+M", "Comment field; Enter there confirms the selected protocol with the comment"),
        ("Ctrl+Z", "Undo the last decision (the order returns to To do)"),
    ]),
    ("Worklist", [
        ("Ctrl+↓ / Ctrl+↑", "Next / previous order"),
        ("Ctrl+L", "Focus the worklist (↑/↓ to move, Enter opens)"),
        ("Ctrl+O", "Focus the open order"),
        ("Ctrl+F", "Search the worklist (patient, MRN, accession, exam); Enter opens the first match"),
        ("Ctrl+1 / Ctrl+2 / Ctrl+3", "Show to do / done / all orders"),
        ("Ctrl+Shift+M", "Modality filter (↑/↓ choose, Enter applies)"),
        ("Ctrl+Shift+S", "Sort the worklist by a column (choosing the same column again reverses it)"),
        ("Ctrl+Shift+D", "Back to the worklist order (STAT first, then longest waiting)"),
        ("F5", "Refresh now (new orders also appear by themselves)"),
    ]),
    ("Application", [
        ("Ctrl+I", "Import orders from JSONL or CSV"),
        ("F1", "This list"),
        ("Ctrl+Q", "Quit"),
    ]),
]


class ShortcutsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.setObjectName("shortcutsDialog")
        self.resize(760, 780)
        layout = QVBoxLayout(self)
        intro = QLabel("RadAssist is built for the keyboard: open an order, read the notes, press Enter.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        rows = sum(len(items) + 1 for _, items in SHORTCUTS)
        self.table = QTableWidget(rows, 2)
        self.table.setObjectName("shortcutsTable")
        self.table.setHorizontalHeaderLabels(["Keys", "Action"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        row = 0
        for section, items in SHORTCUTS:
            head = QTableWidgetItem(section)
            font = head.font()
            font.setBold(True)
            head.setFont(font)
            head.setBackground(self.palette().alternateBase())
            self.table.setItem(row, 0, head)
            self.table.setSpan(row, 0, 1, 2)
            row += 1
            for keys, action in items:
                key_item = QTableWidgetItem(keys)
                key_item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                kf = key_item.font()
                kf.setBold(True)
                key_item.setFont(kf)
                self.table.setItem(row, 0, key_item)
                self.table.setItem(row, 1, QTableWidgetItem(action))
                row += 1
        self.table.resizeRowsToContents()
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
