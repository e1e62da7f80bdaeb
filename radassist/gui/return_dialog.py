"""Return an order to the referrer: a short question (required, at most 500 characters).

The dialog only collects the text; the main window commits it through the core
(``worklist.return_to_referrer``), which checks the role, the length and audits it.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout

from radassist.worklist import MAX_QUESTION

QUICK_QUESTIONS = (
    "Please clarify the clinical question.",
    "Please confirm the side (left/right).",
    "Please provide a recent eGFR / creatinine.",
    "Is the patient pregnant? Please confirm.",
)


class ReturnDialog(QDialog):
    def __init__(self, who: str, exam: str, parent=None):
        super().__init__(parent)
        self.setObjectName("returnDialog")
        self.setWindowTitle("Return to referrer")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        intro = QLabel(f"Return <b>{exam}</b> for {who} to the referrer. The order leaves To do and shows "
                       "as <i>Returned</i>; no protocol is sent and it is not used for training. Undo (Ctrl+Z) "
                       "brings it back. Enter sends, Shift+Enter starts a new line.")
        intro.setTextFormat(Qt.TextFormat.RichText)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.text = QPlainTextEdit()
        self.text.setObjectName("returnQuestion")
        self.text.setPlaceholderText("Question for the referrer (required), e.g. " + QUICK_QUESTIONS[0])
        self.text.setTabChangesFocus(True)
        self.text.setMinimumHeight(90)
        self.text.textChanged.connect(self._update)
        self.text.installEventFilter(self)
        layout.addWidget(self.text)
        self.counter = QLabel()
        self.counter.setObjectName("mutedLabel")
        self.counter.setAlignment(Qt.AlignmentFlag.AlignRight)
        layout.addWidget(self.counter)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("Return to referrer")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._update()

    def question(self) -> str:
        return self.text.toPlainText().strip()

    def _update(self) -> None:
        n = len(self.question())
        valid = 0 < n <= MAX_QUESTION
        self.ok.setEnabled(valid)
        self.counter.setText(f"{n} / {MAX_QUESTION}" + ("  — too long" if n > MAX_QUESTION else
                                                        "  — a question is required" if n == 0 else ""))
        self.counter.setProperty("error", n > MAX_QUESTION)

    def accept(self) -> None:
        if 0 < len(self.question()) <= MAX_QUESTION:
            super().accept()

    def eventFilter(self, obj, event):
        # Enter sends; Shift+Enter makes a new line in the question
        if obj is self.text and event.type() == QEvent.Type.KeyPress \
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) \
                and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.accept()
            return True
        return super().eventFilter(obj, event)
