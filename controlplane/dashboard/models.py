from django.db import models


class LoginAttempt(models.Model):
    """One failed dashboard login, for throttling (kept in the database so that every
    control-plane process sees the same count)."""
    username = models.CharField(max_length=150, db_index=True)
    address = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["username", "address", "created"], name="login_attempt_lookup")]

    def __str__(self):
        return f"{self.username} from {self.address} at {self.created:%Y-%m-%d %H:%M:%S}"
