"""The ID token's and userinfo's claims: e-mail (verified unless the user's first name is
"unverified"), preferred_username and ``groups`` (the user's Django groups)."""
from oauth2_provider.oauth2_validators import OAuth2Validator


class Validator(OAuth2Validator):
    oidc_claim_scope = None  # every claim, whatever the scopes

    def get_additional_claims(self, request):
        user = request.user
        return {
            "email": user.email,
            "email_verified": user.first_name != "unverified",
            "preferred_username": user.username,
            "groups": sorted(g.name for g in user.groups.all()),
        }
