"""CopyJob manifests: validation at the edge, field-named errors, Secrets beside the job."""

from __future__ import annotations

import base64
import textwrap

import pytest

from ferry.errors import InvalidSpec
from ferry.model import loading
from ferry.model.copyjob import Overwrite, Verify
from ferry.model.loading import MAX_ALIASES, MAX_FILE_BYTES, SecretData, load_job_text

HEADER = "apiVersion: ferry.dev/v1alpha1\nkind: CopyJob\nmetadata: {name: job}\n"


def manifest(spec: str) -> str:
    return HEADER + "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


MINIMAL = manifest(
    """
    source: {bucket: src-bucket, prefix: data/}
    destination: {bucket: dst-bucket, prefix: copy/}
    """
)


def test_minimal_manifest_fills_defaults() -> None:
    spec = load_job_text(MINIMAL).copyjob.spec
    assert spec.source.bucket == "src-bucket"
    assert spec.source.prefix == "data/"
    assert spec.destination.bucket == "dst-bucket"
    assert spec.overwrite is Overwrite.IF_DIFFERENT
    assert spec.verify is Verify.CHECKSUM
    assert (spec.preserve.metadata, spec.preserve.tags) == (True, True)
    assert spec.concurrency.max == 512
    assert spec.concurrency.initial is None
    assert (spec.rate_limit.requests_per_second, spec.rate_limit.bytes_per_second) == (0, 0)
    assert spec.report is None


def test_full_manifest_values() -> None:
    text = manifest(
        """
        source:
          bucket: src-bucket
          prefix: data/
          endpoint: https://s3.example.com:9000/
          region: eu-west-1
          addressingStyle: path
          credentialsSecret: src-creds
        destination:
          bucket: dst-bucket
          storageClass: STANDARD_IA
          serverSideEncryption: {type: aws:kms, kmsKeyId: key-1}
        filter:
          include: ["*.csv"]
          exclude: ["tmp/*"]
          minSize: 1Ki
          maxSize: 5Gi
          modifiedAfter: "2024-01-01T00:00:00Z"
          modifiedBefore: "2024-06-01T00:00:00+02:00"
        objectSizes: {median: 100Ki, p99: 4Mi, max: 1Gi}
        overwrite: never
        verify: etag
        preserve: {metadata: false, tags: true}
        concurrency: {max: 64, initial: 8}
        rateLimit: {requestsPerSecond: 100, bytesPerSecond: 10Mi}
        """
    )
    spec = load_job_text(text).copyjob.spec
    assert spec.source.endpoint == "https://s3.example.com:9000"
    assert spec.source.credentials_secret == "src-creds"
    assert spec.destination.server_side_encryption is not None
    assert spec.destination.server_side_encryption.kms_key_id == "key-1"
    assert spec.filter.min_size == 1024
    assert spec.filter.max_size == 5 * 2**30
    assert spec.filter.modified_after is not None and spec.filter.modified_after.tzinfo is not None
    assert spec.object_sizes.p99 == 4 * 2**20
    assert spec.overwrite is Overwrite.NEVER
    assert spec.verify is Verify.ETAG
    assert spec.preserve.metadata is False
    assert (spec.concurrency.max, spec.concurrency.initial) == (64, 8)
    assert spec.rate_limit.bytes_per_second == 10 * 2**20


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        pytest.param(
            "{bucket: same-bucket, prefix: a/}", "{bucket: same-bucket, prefix: b/}", id="sibling-prefixes"
        ),
        pytest.param(
            "{bucket: same-bucket, prefix: a/}",
            "{bucket: same-bucket, prefix: a/, endpoint: 'http://other:9000'}",
            id="other-endpoint",
        ),
        pytest.param("{bucket: src-bucket}", "{bucket: dst-bucket}", id="different-buckets-no-prefix"),
    ],
)
def test_non_overlapping_locations_are_valid(source: str, destination: str) -> None:
    load_job_text(manifest(f"source: {source}\ndestination: {destination}"))


SRC = "source: {bucket: src-bucket, prefix: a/}\n"
DST = "destination: {bucket: dst-bucket, prefix: b/}\n"

INVALID_SPECS = [
    pytest.param(
        SRC + DST + "bogus: 1",
        ["spec.bogus: unknown field", "allowed here:", "objectSizes", "rateLimit"],
        id="unknown-field-spec",
    ),
    pytest.param(
        "source: {bucket: src-bucket, bogus: 1}\n" + DST,
        ["spec.source.bogus: unknown field", "bucket, prefix, endpoint, region, addressingStyle"],
        id="unknown-field-source",
    ),
    pytest.param(
        SRC + "destination: {bucket: dst-bucket, serverSideEncryption: {type: AES256, bogus: x}}",
        ["spec.destination.serverSideEncryption.bogus: unknown field", "type, kmsKeyId"],
        id="unknown-field-depth-3",
    ),
    pytest.param(
        SRC + DST + "filter: {bogus: 1}",
        ["spec.filter.bogus: unknown field", "minSize", "modifiedBefore"],
        id="unknown-field-filter",
    ),
    pytest.param(
        SRC + DST + "report: {bucket: rep-bucket, bogus: 1}",
        ["spec.report.bogus: unknown field", "credentialsSecret"],
        id="unknown-field-optional-report",
    ),
    pytest.param(
        "source: {prefix: a/}\n" + DST, ["spec.source.bucket: required field is missing"], id="missing-bucket"
    ),
    pytest.param(DST, ["spec.source: required field is missing"], id="missing-source"),
    pytest.param(
        "source: {bucket: Bad_Bucket}\n" + DST,
        ["spec.source.bucket", "not a valid bucket name"],
        id="bucket-uppercase",
    ),
    pytest.param(
        "source: {bucket: ab}\n" + DST, ["spec.source.bucket", "3-63 characters"], id="bucket-too-short"
    ),
    pytest.param("source: {bucket: " + "a" * 64 + "}\n" + DST, ["spec.source.bucket"], id="bucket-too-long"),
    pytest.param("source: {bucket: a..b}\n" + DST, ["spec.source.bucket"], id="bucket-double-dot"),
    pytest.param("source: {bucket: -abc}\n" + DST, ["spec.source.bucket"], id="bucket-leading-dash"),
    pytest.param(
        "source: {bucket: src-bucket, endpoint: s3.example.com}\n" + DST,
        ["spec.source.endpoint", "not an http(s) URL"],
        id="endpoint-not-url",
    ),
    pytest.param(
        "source: {bucket: src-bucket, endpoint: 'ftp://s3.example.com'}\n" + DST,
        ["spec.source.endpoint", "not an http(s) URL"],
        id="endpoint-ftp",
    ),
    pytest.param(
        SRC + "destination: {bucket: dst-bucket, endpoint: 'https://s3.example.com/bucket'}",
        ["spec.destination.endpoint", "has a path or query"],
        id="endpoint-with-path",
    ),
    pytest.param(
        "source: {bucket: src-bucket, endpoint: 'https://s3.example.com?x=1'}\n" + DST,
        ["spec.source.endpoint", "has a path or query"],
        id="endpoint-with-query",
    ),
    pytest.param(
        'source: {bucket: src-bucket, prefix: "a\\x01"}\n' + DST,
        ["spec.source.prefix", "control characters"],
        id="prefix-control-char",
    ),
    pytest.param(
        "source: {bucket: src-bucket, prefix: " + "k" * 1025 + "}\n" + DST,
        ["spec.source.prefix", "1025 bytes"],
        id="prefix-too-long",
    ),
    pytest.param(
        "source: {bucket: src-bucket, credentialsSecret: Not_A_Name}\n" + DST,
        ["spec.source.credentialsSecret", "not a valid Secret name"],
        id="bad-secret-name",
    ),
    pytest.param(
        SRC + DST + "filter: {minSize: 2Ki, maxSize: 1Ki}",
        ["spec.filter: minSize (2048 bytes) is larger than maxSize (1024 bytes)"],
        id="min-size-above-max-size",
    ),
    pytest.param(
        SRC + DST + "filter: {modifiedAfter: '2024-01-01T00:00:00'}",
        ["spec.filter: modifiedAfter needs a time zone"],
        id="modified-after-naive",
    ),
    pytest.param(
        SRC + DST + "filter: {modifiedBefore: '2024-01-01T00:00:00'}",
        ["spec.filter: modifiedBefore needs a time zone"],
        id="modified-before-naive",
    ),
    pytest.param(
        SRC + DST + "filter: {modifiedAfter: '2024-02-01T00:00:00Z', modifiedBefore: '2024-01-01T00:00:00Z'}",
        ["spec.filter: modifiedAfter must be earlier than modifiedBefore"],
        id="modified-after-later",
    ),
    pytest.param(
        SRC + DST + "filter: {modifiedAfter: '2024-01-01T00:00:00Z', modifiedBefore: '2024-01-01T00:00:00Z'}",
        ["spec.filter: modifiedAfter must be earlier than modifiedBefore"],
        id="modified-after-equal",
    ),
    pytest.param(
        SRC + DST + "filter: {include: ['']}", ["spec.filter.include.0", "empty pattern"], id="empty-glob"
    ),
    pytest.param(
        SRC + DST + "objectSizes: {median: 1Mi, p99: 1Ki}",
        ["spec.objectSizes: median (1048576 bytes) is larger than p99 (1024 bytes)"],
        id="median-above-p99",
    ),
    pytest.param(
        SRC + DST + "objectSizes: {p99: 2Gi, max: 1Gi}",
        ["spec.objectSizes: p99", "larger than max"],
        id="p99-above-max",
    ),
    pytest.param(
        SRC + DST + "concurrency: {max: 0}",
        ["spec.concurrency.max", "greater than or equal to 1"],
        id="concurrency-0",
    ),
    pytest.param(
        SRC + DST + "concurrency: {max: 5000}",
        ["spec.concurrency.max", "less than or equal to 4096"],
        id="concurrency-5000",
    ),
    pytest.param(
        SRC + DST + "concurrency: {max: 4, initial: 8}",
        ["spec.concurrency: initial (8) is larger than max (4)"],
        id="initial-above-max",
    ),
    pytest.param(
        SRC + DST + "rateLimit: {requestsPerSecond: -1}",
        ["spec.rateLimit.requestsPerSecond", "greater than or equal to 0"],
        id="negative-rps",
    ),
    pytest.param(
        SRC + DST + "rateLimit: {bytesPerSecond: 5XB}",
        ["spec.rateLimit.bytesPerSecond", "'5XB' is not a quantity"],
        id="bad-quantity",
    ),
    pytest.param(
        SRC + DST + "filter: {minSize: '1.5'}",
        ["spec.filter.minSize", "whole number of bytes"],
        id="fractional-quantity",
    ),
    pytest.param(
        SRC + DST + "overwrite: sometimes",
        ["spec.overwrite", "(got 'sometimes')"],
        id="bad-enum",
    ),
    pytest.param(
        SRC + "destination: {bucket: dst-bucket, serverSideEncryption: {type: AES256, kmsKeyId: key-1}}",
        ["spec.destination.serverSideEncryption: kmsKeyId is only valid with type aws:kms"],
        id="kms-key-with-aes256",
    ),
    pytest.param(
        SRC + "destination: {bucket: dst-bucket, storageClass: COLD}",
        ["spec.destination.storageClass", "(got 'COLD')"],
        id="bad-storage-class",
    ),
    pytest.param(
        "source: {bucket: same-bucket, prefix: a/}\ndestination: {bucket: same-bucket, prefix: a/}",
        ["spec: source and destination overlap", "'same-bucket'"],
        id="overlap-same-prefix",
    ),
    pytest.param(
        "source: {bucket: same-bucket, prefix: a/}\ndestination: {bucket: same-bucket, prefix: a/b/}",
        ["spec: source and destination overlap", "'a/' and 'a/b/'"],
        id="overlap-destination-inside-source",
    ),
    pytest.param(
        "source: {bucket: same-bucket, prefix: a/b/}\ndestination: {bucket: same-bucket}",
        ["spec: source and destination overlap"],
        id="overlap-source-inside-whole-bucket",
    ),
    pytest.param(
        "source: {bucket: same-bucket, endpoint: 'http://s3:9000'}\n"
        "destination: {bucket: same-bucket, prefix: x/, endpoint: 'http://s3:9000/'}",
        ["spec: source and destination overlap"],
        id="overlap-same-endpoint-trailing-slash",
    ),
]


@pytest.mark.parametrize(("spec", "fragments"), INVALID_SPECS)
def test_invalid_spec_names_the_field(spec: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        load_job_text(manifest(spec), "job.yaml")
    message = str(caught.value)
    assert message.startswith("job.yaml: invalid CopyJob:")
    for fragment in fragments:
        assert fragment in message


def test_bucket_with_underscore_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.source\.bucket"):
        load_job_text(manifest("source: {bucket: my_bucket}\n" + DST))


def test_snake_case_field_name_is_unknown() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.filter\.min_size: unknown field"):
        load_job_text(manifest(SRC + DST + "filter: {min_size: 10}"))


def test_huge_quantity_exponent_is_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="bytesPerSecond"):
        load_job_text(manifest(SRC + DST + "rateLimit: {bytesPerSecond: '1e9999999'}"))


SPEC_BODY = "spec:\n  source: {bucket: src-bucket}\n  destination: {bucket: dst-bucket}\n"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            "apiVersion: ferry.dev/v1\nkind: CopyJob\nmetadata: {name: j}\n" + SPEC_BODY,
            ["apiVersion is 'ferry.dev/v1'", "write apiVersion: ferry.dev/v1alpha1"],
            id="wrong-api-version",
        ),
        pytest.param(
            "kind: CopyJob\nmetadata: {name: j}\n" + SPEC_BODY,
            ["apiVersion is None"],
            id="missing-api-version",
        ),
        pytest.param(
            "apiVersion: ferry.dev/v1alpha1\nkind: Deployment\nmetadata: {name: j}\n",
            ["unexpected kind(s) ['Deployment']"],
            id="wrong-kind",
        ),
        pytest.param(
            MINIMAL + "---\n" + MINIMAL,
            ["expected exactly one document of kind CopyJob, found 2"],
            id="two-copyjobs",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n",
            ["expected exactly one document of kind CopyJob, found 0"],
            id="no-copyjob",
        ),
        pytest.param("", ["found 0"], id="empty-file"),
        pytest.param(
            MINIMAL + "---\n- a\n- b\n", ["document 2 is a list, not a mapping"], id="list-document"
        ),
        pytest.param("just a string\n", ["document 1 is a str, not a mapping"], id="scalar-document"),
        pytest.param("kind: CopyJob\nspec: [unclosed\n", ["not valid YAML"], id="invalid-yaml"),
        pytest.param("a: 1\n\tb: 2\n", ["not valid YAML"], id="tab-indent"),
        pytest.param(
            HEADER.replace("metadata: {name: job}", "metadata: {}") + SPEC_BODY,
            ["metadata.name: required field is missing"],
            id="missing-metadata-name",
        ),
        pytest.param(
            MINIMAL
            + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: '!!not-base64!!'}\n",
            ["Secret 's' data.key is not valid base64 text"],
            id="secret-bad-base64",
        ),
        pytest.param(
            MINIMAL
            + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: "
            + base64.b64encode(b"\xff\xfe").decode()
            + "}\n",
            ["data.key is not valid base64 text"],
            id="secret-base64-not-utf8",
        ),
        pytest.param(
            MINIMAL + "---\napiVersion: v1\nkind: Secret\nmetadata: {}\nstringData: {a: b}\n",
            ["a Secret document has no metadata.name"],
            id="secret-without-name",
        ),
    ],
)
def test_invalid_file(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        load_job_text(text, "job.yaml")
    message = str(caught.value)
    assert message.startswith("job.yaml: ")
    for fragment in fragments:
        assert fragment in message


def yaml_bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x]"]
    for level in range(1, levels + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_yaml_bomb_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="refusing a YAML bomb"):
        load_job_text(yaml_bomb(levels=9, width=9))


def test_few_aliases_are_allowed() -> None:
    text = MINIMAL.replace(
        "metadata: {name: job}", "metadata: {name: job, labels: &l {a: b}, annotations: *l}"
    )
    assert load_job_text(text).copyjob.metadata.name == "job"
    assert MAX_ALIASES >= 1


def test_file_over_one_mebibyte_is_refused() -> None:
    padding = "# " + "x" * 1000 + "\n"
    text = MINIMAL + padding * (MAX_FILE_BYTES // len(padding) + 1)
    assert len(text.encode()) > MAX_FILE_BYTES
    with pytest.raises(InvalidSpec, match="larger than 1048576 bytes"):
        load_job_text(text)


def test_file_size_limit_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsing a real 1 MiB file takes seconds in pure-Python YAML; test the boundary on a lowered limit.
    monkeypatch.setattr(loading, "MAX_FILE_BYTES", len(MINIMAL.encode()))
    assert load_job_text(MINIMAL).copyjob.spec.source.bucket == "src-bucket"
    with pytest.raises(InvalidSpec, match="file is larger than"):
        load_job_text(MINIMAL + "#")


def test_size_limit_counts_utf8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "MAX_FILE_BYTES", len(MINIMAL.encode()) + 2)
    with pytest.raises(InvalidSpec, match="file is larger than"):
        load_job_text(MINIMAL + "#\u00e9\n")  # 3 characters, 4 bytes


SECRETS = (
    "---\napiVersion: v1\nkind: Secret\nmetadata: {name: src-creds}\n"
    "stringData: {accessKeyId: AKIASTRING, secretAccessKey: hunter2-string}\n"
    "---\napiVersion: v1\nkind: Secret\nmetadata: {name: dst-creds}\n"
    "data: {accessKeyId: "
    + base64.b64encode(b"AKIABASE64").decode()
    + ", secretAccessKey: "
    + base64.b64encode("s3cr\u00e9t-b64".encode()).decode()
    + "}\n"
    "---\napiVersion: v1\nkind: Secret\nmetadata: {name: both}\n"
    "data: {k: " + base64.b64encode(b"from-data").decode() + "}\nstringData: {k: from-stringData}\n"
)


@pytest.mark.parametrize(
    ("name", "values"),
    [
        pytest.param(
            "src-creds", {"accessKeyId": "AKIASTRING", "secretAccessKey": "hunter2-string"}, id="stringData"
        ),
        pytest.param(
            "dst-creds", {"accessKeyId": "AKIABASE64", "secretAccessKey": "s3cr\u00e9t-b64"}, id="data-base64"
        ),
        pytest.param("both", {"k": "from-stringData"}, id="stringData-wins-over-data"),
    ],
)
def test_secrets_are_decoded(name: str, values: dict[str, str]) -> None:
    secrets = load_job_text(MINIMAL + SECRETS).secrets
    assert set(secrets) == {"src-creds", "dst-creds", "both"}
    assert secrets[name].name == name
    assert secrets[name].values == values


def test_secret_repr_hides_values() -> None:
    secrets = load_job_text(MINIMAL + SECRETS).secrets
    for secret in secrets.values():
        for text in (repr(secret), str(secret)):
            assert secret.name in text
            for value in secret.values.values():
                assert value not in text
    assert "accessKeyId" in repr(secrets["src-creds"])


def test_secret_data_repr_direct() -> None:
    secret = SecretData(name="creds", values={"password": "topsecret"})
    assert "topsecret" not in repr(secret)
    assert "password" in repr(secret)
