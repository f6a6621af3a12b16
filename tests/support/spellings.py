"""Endpoint spellings shared by the model's unit tests, the CRD's apply-time tests and the operator's
end-to-end tests: pairs of endpoints (None: no endpoint, AWS's default) and whether they reach the same
S3 service, so that one bucket behind both can overlap with itself."""

from __future__ import annotations

#: (name, source endpoint, destination endpoint, same service)
SPELLINGS: list[tuple[str, str | None, str | None, bool]] = [
    ("identical", "https://s3.example.com", "https://s3.example.com", True),
    ("trailing-slash", "https://s3.example.com", "https://s3.example.com/", True),
    ("host-case", "https://s3.example.com", "https://S3.Example.COM", True),
    ("default-https-port", "https://s3.example.com", "https://s3.example.com:443", True),
    ("default-http-port", "http://s3.example.com", "http://s3.example.com:80", True),
    ("http-and-https-of-one-host", "http://s3.example.com", "https://s3.example.com", True),
    ("aws-default-vs-none", None, "https://s3.amazonaws.com", True),
    ("aws-regional-vs-none", None, "https://s3.eu-west-1.amazonaws.com", True),
    (
        "aws-two-regions",
        "https://s3.us-east-1.amazonaws.com:443",
        "https://S3.EU-WEST-1.amazonaws.com/",
        True,
    ),
    ("aws-china", None, "https://s3.cn-north-1.amazonaws.com.cn", True),
    ("ipv6-default-port", "https://[::1]", "https://[::1]:443", True),
    ("same-host-other-port", "http://127.0.0.1:9000", "http://127.0.0.1:9001", False),
    ("other-host", "https://a.example.com", "https://b.example.com", False),
    ("custom-vs-none", "https://s3.example.com", None, False),
    ("look-alike-of-aws", "https://notamazonaws.com", None, False),
    ("ipv6-other-port", "https://[::1]", "https://[::1]:9000", False),
]
