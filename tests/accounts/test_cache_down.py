"""Production's Django cache is Redis (allauth keeps rate limits there): a cache that
cannot be reached is named as such, so a page that meets it answers 503, not 500."""
import pytest
from django.core.cache.backends.redis import RedisCache

from controlplane.unavailable import dependency_down
from tests.support import free_port


def test_an_unreachable_redis_cache_is_a_dependency_down():
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0",
                       {"OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}})
    with pytest.raises(Exception) as caught:
        cache.add("switchyard-test", "y", 5)
    assert dependency_down(caught.value) == "cache"
