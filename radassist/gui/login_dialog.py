"""Sign-in dialog, the same dialog to unlock after an idle lock, and an idle-time watcher.

Integration (main window):

    dlg = LoginDialog(db, parent=None)            # at start
    if dlg.exec() != QDialog.Accepted: quit
    actor = dlg.actor                              # radassist.access.Actor

    watcher = IdleLockWatcher(minutes=settings.idle_lock_minutes, parent=app_or_window)
    watcher.idle.connect(lock)                     # no user input for that long
    def lock():
        with db.session() as s: users.lock_session(s, actor)   # audited "session.lock"
        dlg = LoginDialog.for_unlock(db, actor, parent=window) # the open order stays open behind it
        if dlg.exec() == QDialog.Accepted: actor = dlg.actor    # audited "session.unlock"
        else: sign out (dlg.signed_out is True)                 # call users.sign_out yourself
"""
from __future__ import annotations

import html

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit,
                               QPushButton, QVBoxLayout, QWidget)

from radassist import users
from radassist.access import Actor


class LoginDialog(QDialog):
    """Username and password; shows the error (or the lockout) and stays open until it succeeds.

    ``LoginDialog(db, parent=None, username="")``: sign-in (``users.authenticate``).
    ``LoginDialog.for_unlock(db, actor, parent=None)``: after an idle lock, the username fixed,
    password checked by ``users.unlock_session``; a "Sign out" button rejects with
    ``signed_out = True``. After ``exec() == Accepted``, ``actor`` is the signed-in Actor.
    """

    def __init__(self, db, parent: QWidget | None = None, username: str = "", *,
                 unlock_actor: Actor | None = None, demo_accounts=()):
        super().__init__(parent)
        self._db = db
        self._unlock_actor = unlock_actor
        self.actor: Actor | None = None
        self.signed_out = False
        self.setObjectName("LoginDialog")
        self.setModal(True)
        self.setMinimumWidth(360)

        title = QLabel("Session locked" if unlock_actor else "Sign in to RadAssist")
        title.setObjectName("loginTitle")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        title.setFont(font)
        hint = QLabel("Enter your password to continue. Your open order is kept."
                      if unlock_actor else "Use your RadAssist account.")
        hint.setWordWrap(True)

        self.username_edit = QLineEdit(unlock_actor.username if unlock_actor else username)
        self.username_edit.setObjectName("username")
        self.username_edit.setMaxLength(64)
        self.username_edit.setReadOnly(unlock_actor is not None)
        self.password_edit = QLineEdit()
        self.password_edit.setObjectName("password")
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.error_label = QLabel()
        self.error_label.setObjectName("loginError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020;")
        self.error_label.hide()

        form = QFormLayout()
        form.addRow("&Username:", self.username_edit)
        form.addRow("&Password:", self.password_edit)

        self.buttons = QDialogButtonBox()
        self.ok_button = self.buttons.addButton("Unlock" if unlock_actor else "Sign in",
                                                QDialogButtonBox.ButtonRole.AcceptRole)
        self.ok_button.setDefault(True)
        if unlock_actor:
            self.sign_out_button: QPushButton | None = self.buttons.addButton(
                "Sign out", QDialogButtonBox.ButtonRole.DestructiveRole)
            self.sign_out_button.clicked.connect(self._sign_out)
        else:
            self.sign_out_button = None
            self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.try_sign_in)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addLayout(form)
        # demo mode: the accounts, in the dialog itself (a window manager may cut a long title)
        self.demo_label: QLabel | None = None
        if demo_accounts and unlock_actor is None:
            rows = "".join(f"<tr><td><b>{html.escape(u)}</b></td><td>&nbsp;{html.escape(p)}&nbsp;</td>"
                           f"<td style='color:#6b7480'>{html.escape(r)}</td></tr>" for u, p, r in demo_accounts)
            self.demo_label = QLabel(f"Demo accounts (username, password, role):<table>{rows}</table>")
            self.demo_label.setObjectName("demoAccounts")
            self.demo_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(self.demo_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.setWindowTitle("RadAssist – " + ("locked" if unlock_actor else "sign in"))
        (self.password_edit if unlock_actor or username else self.username_edit).setFocus()

    @classmethod
    def for_unlock(cls, db, actor: Actor, parent: QWidget | None = None) -> "LoginDialog":
        return cls(db, parent, unlock_actor=actor)

    def reject(self) -> None:
        # In unlock mode Escape must not leave the session open: closing means signing out.
        if self._unlock_actor is not None:
            self.signed_out = True
        super().reject()

    def _sign_out(self) -> None:
        self.signed_out = True
        super().reject()

    def show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()

    def try_sign_in(self) -> bool:
        """Check the credentials; accept on success, show the message otherwise."""
        username = self.username_edit.text().strip()
        password = self.password_edit.text()
        if not username or not password:
            self.show_error("Enter your username and password.")
            return False
        try:
            with self._db.session() as session:
                if self._unlock_actor is not None:
                    actor = users.unlock_session(session, self._unlock_actor, password)
                else:
                    actor = users.authenticate(session, username, password)
        except users.AccountLocked as exc:
            self.password_edit.clear()
            self.show_error(str(exc))
            return False
        except users.AuthenticationError as exc:
            self.password_edit.clear()
            self.password_edit.setFocus()
            self.show_error(str(exc))
            return False
        finally:
            password = ""  # noqa: F841 - drop the reference early
        self.password_edit.clear()
        self.actor = actor
        self.accept()
        return True


class IdleLockWatcher(QObject):
    """Emits ``idle`` after ``minutes`` without keyboard or mouse input anywhere in the app.

    Installs an application-wide event filter. ``set_minutes`` changes the timeout (site settings
    ``idle_lock_minutes``), ``pause()``/``resume()`` stop it while the lock dialog is shown.
    """

    idle = Signal()
    _INPUT_EVENTS = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
                               QEvent.Type.Wheel, QEvent.Type.TouchBegin})

    def __init__(self, minutes: float = 10, parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.idle)
        self.set_minutes(minutes)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        self._timer.start()

    def set_minutes(self, minutes: float) -> None:
        self._timer.setInterval(max(1, int(minutes * 60_000)))
        if self._timer.isActive():
            self._timer.start()

    def interval_ms(self) -> int:
        return self._timer.interval()

    def pause(self) -> None:
        self._timer.stop()

    def resume(self) -> None:
        self._timer.start()

    def poke(self) -> None:
        """User activity: restart the countdown (also called by the event filter)."""
        if self._timer.isActive():
            self._timer.start()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() in self._INPUT_EVENTS:
            self.poke()
        return False
