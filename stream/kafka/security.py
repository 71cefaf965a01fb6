"""Security settings as each Kafka client spells them: one mapping per client, tested side by side.

kafka-python takes keyword arguments (:meth:`stream.settings.Settings.kafka_security`);
librdkafka takes dotted configuration properties (:func:`librdkafka_security`).
Both get the same protocol, the same SASL user and the same certificates, and
both verify the broker's host name. OAUTHBEARER (OIDC client credentials) and
GSSAPI (Kerberos) are librdkafka's only: settings refuse them with
kafka-python (see :class:`~stream.settings.Settings`).

    >>> from stream.settings import Settings
    >>> s = Settings(kafka_client="confluent", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...              sasl_username="u", sasl_password="p", ssl_cafile="/ca.pem")
    >>> sorted(librdkafka_security(s).items())  # doctest: +NORMALIZE_WHITESPACE
    [('enable.ssl.certificate.verification', True), ('sasl.mechanism', 'SCRAM-SHA-512'), ('sasl.password', 'p'),
     ('sasl.username', 'u'), ('security.protocol', 'SASL_SSL'), ('ssl.ca.location', '/ca.pem'),
     ('ssl.endpoint.identification.algorithm', 'https')]
"""

from __future__ import annotations

from typing import Any

from stream.settings import Settings

__all__ = ["librdkafka_security"]

_SSL_FILES = {"ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
              "ssl_keyfile": "ssl.key.location"}


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """librdkafka's security properties for ``settings`` (``security.protocol`` and what it needs)."""
    opts: dict[str, Any] = {"security.protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        mechanism = settings.sasl_mechanism or "PLAIN"
        opts["sasl.mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            opts.update({"sasl.oauthbearer.method": "oidc",
                         "sasl.oauthbearer.client.id": settings.sasl_username,
                         "sasl.oauthbearer.client.secret": settings.sasl_password,
                         "sasl.oauthbearer.token.endpoint.url": settings.sasl_oauthbearer_token_url})
        elif mechanism == "GSSAPI":
            opts["sasl.kerberos.service.name"] = settings.sasl_kerberos_service_name
            if settings.sasl_username:
                opts["sasl.kerberos.principal"] = settings.sasl_username
            if settings.sasl_kerberos_keytab:
                opts["sasl.kerberos.keytab"] = settings.sasl_kerberos_keytab
        else:
            if settings.sasl_username:
                opts["sasl.username"] = settings.sasl_username
            if settings.sasl_password:
                opts["sasl.password"] = settings.sasl_password
    if settings.security_protocol.endswith("SSL"):
        opts["enable.ssl.certificate.verification"] = True
        opts["ssl.endpoint.identification.algorithm"] = "https"
        for key, prop in _SSL_FILES.items():
            if getattr(settings, key):
                opts[prop] = getattr(settings, key)
    return opts
