"""Limit/offset pagination that refuses malformed values with a 400 naming the parameter
(DRF's silently ignores them)."""
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_LIMIT = 1000


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def _check(self, request, name):
        values = request.query_params.getlist(name)
        if not values:
            return
        if len(values) > 1:
            raise ValidationError({name: ["give it once"]})
        try:
            number = int(values[0])
        except ValueError:
            raise ValidationError({name: ["must be a non-negative integer"]}) from None
        if number < 0 or number > 2 ** 31:
            raise ValidationError({name: ["must be a non-negative integer"]})

    def paginate_queryset(self, queryset, request, view=None):
        self._check(request, self.limit_query_param)
        self._check(request, self.offset_query_param)
        return super().paginate_queryset(queryset, request, view)
