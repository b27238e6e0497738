"""Our mirror of the App Mesh API shapes (botocore `appmesh/2019-01-25`), and a checker that walks them.

`SHAPES` lists every shape reachable from the seven resource specs, under the service model's own shape names,
with the same members, required members, unions, enums and numeric / length limits. The sidecar never loads
botocore; `tests/unit/config/test_config_service_model.py` compares this table with the installed service
model so drift is caught. The one deliberate difference is `documented_enum`: a value set the API
*documentation* lists for a member the model leaves free-form (`httpRetryEvents`), which we enforce because
App Mesh does.

`ShapeChecker` reports type, required-member, union, enum, range, length and pattern problems with the API's
member names in the path, and reports members the model does not know as warnings ("unsupported field,
ignored"). Cross-field rules (prefix starts with '/', exactly one route type, references, ...) live in
`validate.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from meshproxy.config.errors import Severity

HTTP_RETRY_EVENTS: Final = ("server-error", "gateway-error", "client-error", "stream-error")


@dataclass(frozen=True, slots=True)
class Structure:
    members: Mapping[str, str]  # API member name -> shape name
    required: tuple[str, ...] = ()
    union: bool = False  # exactly one member must be set


@dataclass(frozen=True, slots=True)
class ListOf:
    member: str
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class String:
    min: int | None = None
    max: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    documented_enum: tuple[str, ...] | None = None  # enforced by us; see the module docstring


@dataclass(frozen=True, slots=True)
class Integer:
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Boolean:
    pass


Shape = Structure | ListOf | String | Integer | Boolean

# Names of the spec shapes and name members of each resource type live in model.RESOURCE_TYPES.

SHAPES: Final[Mapping[str, Shape]] = {
    "AccessLog": Structure({"file": "FileAccessLog"}, union=True),
    "Arn": String(),
    "AwsCloudMapInstanceAttribute": Structure(
        {"key": "AwsCloudMapInstanceAttributeKey", "value": "AwsCloudMapInstanceAttributeValue"},
        required=("key", "value"),
    ),
    "AwsCloudMapInstanceAttributeKey": String(min=1, max=255, pattern="^[a-zA-Z0-9!-~]+$"),
    "AwsCloudMapInstanceAttributeValue": String(
        min=1, max=1024, pattern="^([a-zA-Z0-9!-~][  a-zA-Z0-9!-~]*){0,1}[a-zA-Z0-9!-~]{0,1}$"
    ),
    "AwsCloudMapInstanceAttributes": ListOf("AwsCloudMapInstanceAttribute"),
    "AwsCloudMapName": String(min=1, max=1024),
    "AwsCloudMapServiceDiscovery": Structure(
        {
            "attributes": "AwsCloudMapInstanceAttributes",
            "ipPreference": "IpPreference",
            "namespaceName": "AwsCloudMapName",
            "serviceName": "AwsCloudMapName",
        },
        required=("namespaceName", "serviceName"),
    ),
    "Backend": Structure({"virtualService": "VirtualServiceBackend"}, union=True),
    "BackendDefaults": Structure({"clientPolicy": "ClientPolicy"}),
    "Backends": ListOf("Backend"),
    "Boolean": Boolean(),
    "CertificateAuthorityArns": ListOf("Arn", min=1, max=3),
    "ClientPolicy": Structure({"tls": "ClientPolicyTls"}),
    "ClientPolicyTls": Structure(
        {
            "certificate": "ClientTlsCertificate",
            "enforce": "Boolean",
            "ports": "PortSet",
            "validation": "TlsValidationContext",
        },
        required=("validation",),
    ),
    "ClientTlsCertificate": Structure(
        {"file": "ListenerTlsFileCertificate", "sds": "ListenerTlsSdsCertificate"}, union=True
    ),
    "DefaultGatewayRouteRewrite": String(enum=("ENABLED", "DISABLED")),
    "DnsResponseType": String(enum=("LOADBALANCER", "ENDPOINTS")),
    "DnsServiceDiscovery": Structure(
        {"hostname": "Hostname", "ipPreference": "IpPreference", "responseType": "DnsResponseType"},
        required=("hostname",),
    ),
    "Duration": Structure({"unit": "DurationUnit", "value": "DurationValue"}),
    "DurationUnit": String(enum=("s", "ms")),
    "DurationValue": Integer(min=0),
    "EgressFilter": Structure({"type": "EgressFilterType"}, required=("type",)),
    "EgressFilterType": String(enum=("ALLOW_ALL", "DROP_ALL")),
    "ExactHostName": String(min=1, max=253),
    "FileAccessLog": Structure({"format": "LoggingFormat", "path": "FilePath"}, required=("path",)),
    "FilePath": String(min=1, max=255),
    "GatewayRouteHostnameMatch": Structure({"exact": "ExactHostName", "suffix": "SuffixHostname"}),
    "GatewayRouteHostnameRewrite": Structure({"defaultTargetHostname": "DefaultGatewayRouteRewrite"}),
    "GatewayRoutePriority": Integer(min=0, max=1000),
    "GatewayRouteSpec": Structure(
        {
            "grpcRoute": "GrpcGatewayRoute",
            "http2Route": "HttpGatewayRoute",
            "httpRoute": "HttpGatewayRoute",
            "priority": "GatewayRoutePriority",
        }
    ),
    "GatewayRouteTarget": Structure(
        {"port": "ListenerPort", "virtualService": "GatewayRouteVirtualService"}, required=("virtualService",)
    ),
    "GatewayRouteVirtualService": Structure(
        {"virtualServiceName": "ResourceName"}, required=("virtualServiceName",)
    ),
    "GrpcGatewayRoute": Structure(
        {"action": "GrpcGatewayRouteAction", "match": "GrpcGatewayRouteMatch"}, required=("action", "match")
    ),
    "GrpcGatewayRouteAction": Structure(
        {"rewrite": "GrpcGatewayRouteRewrite", "target": "GatewayRouteTarget"}, required=("target",)
    ),
    "GrpcGatewayRouteMatch": Structure(
        {
            "hostname": "GatewayRouteHostnameMatch",
            "metadata": "GrpcGatewayRouteMetadataList",
            "port": "ListenerPort",
            "serviceName": "ServiceName",
        }
    ),
    "GrpcGatewayRouteMetadata": Structure(
        {"invert": "Boolean", "match": "GrpcMetadataMatchMethod", "name": "HeaderName"}, required=("name",)
    ),
    "GrpcGatewayRouteMetadataList": ListOf("GrpcGatewayRouteMetadata", min=1, max=10),
    "GrpcGatewayRouteRewrite": Structure({"hostname": "GatewayRouteHostnameRewrite"}),
    "GrpcMetadataMatchMethod": Structure(
        {
            "exact": "HeaderMatch",
            "prefix": "HeaderMatch",
            "range": "MatchRange",
            "regex": "HeaderMatch",
            "suffix": "HeaderMatch",
        },
        union=True,
    ),
    "GrpcRetryPolicy": Structure(
        {
            "grpcRetryEvents": "GrpcRetryPolicyEvents",
            "httpRetryEvents": "HttpRetryPolicyEvents",
            "maxRetries": "MaxRetries",
            "perRetryTimeout": "Duration",
            "tcpRetryEvents": "TcpRetryPolicyEvents",
        },
        required=("maxRetries", "perRetryTimeout"),
    ),
    "GrpcRetryPolicyEvent": String(
        enum=("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
    ),
    "GrpcRetryPolicyEvents": ListOf("GrpcRetryPolicyEvent", min=1, max=5),
    "GrpcRoute": Structure(
        {
            "action": "GrpcRouteAction",
            "match": "GrpcRouteMatch",
            "retryPolicy": "GrpcRetryPolicy",
            "timeout": "GrpcTimeout",
        },
        required=("action", "match"),
    ),
    "GrpcRouteAction": Structure({"weightedTargets": "WeightedTargets"}, required=("weightedTargets",)),
    "GrpcRouteMatch": Structure(
        {
            "metadata": "GrpcRouteMetadataList",
            "methodName": "MethodName",
            "port": "ListenerPort",
            "serviceName": "ServiceName",
        }
    ),
    "GrpcRouteMetadata": Structure(
        {"invert": "Boolean", "match": "GrpcRouteMetadataMatchMethod", "name": "HeaderName"},
        required=("name",),
    ),
    "GrpcRouteMetadataList": ListOf("GrpcRouteMetadata", min=1, max=10),
    "GrpcRouteMetadataMatchMethod": Structure(
        {
            "exact": "HeaderMatch",
            "prefix": "HeaderMatch",
            "range": "MatchRange",
            "regex": "HeaderMatch",
            "suffix": "HeaderMatch",
        },
        union=True,
    ),
    "GrpcTimeout": Structure({"idle": "Duration", "perRequest": "Duration"}),
    "HeaderMatch": String(min=1, max=255),
    "HeaderMatchMethod": Structure(
        {
            "exact": "HeaderMatch",
            "prefix": "HeaderMatch",
            "range": "MatchRange",
            "regex": "HeaderMatch",
            "suffix": "HeaderMatch",
        },
        union=True,
    ),
    "HeaderName": String(min=1, max=50),
    "HealthCheckIntervalMillis": Integer(min=5000, max=300000),
    "HealthCheckPolicy": Structure(
        {
            "healthyThreshold": "HealthCheckThreshold",
            "intervalMillis": "HealthCheckIntervalMillis",
            "path": "String",
            "port": "PortNumber",
            "protocol": "PortProtocol",
            "timeoutMillis": "HealthCheckTimeoutMillis",
            "unhealthyThreshold": "HealthCheckThreshold",
        },
        required=("healthyThreshold", "intervalMillis", "protocol", "timeoutMillis", "unhealthyThreshold"),
    ),
    "HealthCheckThreshold": Integer(min=2, max=10),
    "HealthCheckTimeoutMillis": Integer(min=2000, max=60000),
    "Hostname": String(),
    "HttpGatewayRoute": Structure(
        {"action": "HttpGatewayRouteAction", "match": "HttpGatewayRouteMatch"}, required=("action", "match")
    ),
    "HttpGatewayRouteAction": Structure(
        {"rewrite": "HttpGatewayRouteRewrite", "target": "GatewayRouteTarget"}, required=("target",)
    ),
    "HttpGatewayRouteHeader": Structure(
        {"invert": "Boolean", "match": "HeaderMatchMethod", "name": "HeaderName"}, required=("name",)
    ),
    "HttpGatewayRouteHeaders": ListOf("HttpGatewayRouteHeader", min=1, max=10),
    "HttpGatewayRouteMatch": Structure(
        {
            "headers": "HttpGatewayRouteHeaders",
            "hostname": "GatewayRouteHostnameMatch",
            "method": "HttpMethod",
            "path": "HttpPathMatch",
            "port": "ListenerPort",
            "prefix": "String",
            "queryParameters": "HttpQueryParameters",
        }
    ),
    "HttpGatewayRoutePathRewrite": Structure({"exact": "HttpPathExact"}),
    "HttpGatewayRoutePrefix": String(min=1, max=255),
    "HttpGatewayRoutePrefixRewrite": Structure(
        {"defaultPrefix": "DefaultGatewayRouteRewrite", "value": "HttpGatewayRoutePrefix"}
    ),
    "HttpGatewayRouteRewrite": Structure(
        {
            "hostname": "GatewayRouteHostnameRewrite",
            "path": "HttpGatewayRoutePathRewrite",
            "prefix": "HttpGatewayRoutePrefixRewrite",
        }
    ),
    "HttpMethod": String(
        enum=("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
    ),
    "HttpPathExact": String(min=1, max=255),
    "HttpPathMatch": Structure({"exact": "HttpPathExact", "regex": "HttpPathRegex"}),
    "HttpPathRegex": String(min=1, max=255),
    "HttpQueryParameter": Structure(
        {"match": "QueryParameterMatch", "name": "QueryParameterName"}, required=("name",)
    ),
    "HttpQueryParameters": ListOf("HttpQueryParameter", min=1, max=10),
    "HttpRetryPolicy": Structure(
        {
            "httpRetryEvents": "HttpRetryPolicyEvents",
            "maxRetries": "MaxRetries",
            "perRetryTimeout": "Duration",
            "tcpRetryEvents": "TcpRetryPolicyEvents",
        },
        required=("maxRetries", "perRetryTimeout"),
    ),
    # The model leaves retry events free-form; the API documentation lists four, and App Mesh rejects others.
    "HttpRetryPolicyEvent": String(min=1, max=25, documented_enum=HTTP_RETRY_EVENTS),
    "HttpRetryPolicyEvents": ListOf("HttpRetryPolicyEvent", min=1, max=25),
    "HttpRoute": Structure(
        {
            "action": "HttpRouteAction",
            "match": "HttpRouteMatch",
            "retryPolicy": "HttpRetryPolicy",
            "timeout": "HttpTimeout",
        },
        required=("action", "match"),
    ),
    "HttpRouteAction": Structure({"weightedTargets": "WeightedTargets"}, required=("weightedTargets",)),
    "HttpRouteHeader": Structure(
        {"invert": "Boolean", "match": "HeaderMatchMethod", "name": "HeaderName"}, required=("name",)
    ),
    "HttpRouteHeaders": ListOf("HttpRouteHeader", min=1, max=10),
    "HttpRouteMatch": Structure(
        {
            "headers": "HttpRouteHeaders",
            "method": "HttpMethod",
            "path": "HttpPathMatch",
            "port": "ListenerPort",
            "prefix": "String",
            "queryParameters": "HttpQueryParameters",
            "scheme": "HttpScheme",
        }
    ),
    "HttpScheme": String(enum=("http", "https")),
    "HttpTimeout": Structure({"idle": "Duration", "perRequest": "Duration"}),
    "IpPreference": String(enum=("IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY")),
    "JsonFormat": ListOf("JsonFormatRef"),
    "JsonFormatRef": Structure({"key": "JsonKey", "value": "JsonValue"}, required=("key", "value")),
    "JsonKey": String(min=1, max=100),
    "JsonValue": String(min=1, max=100),
    "Listener": Structure(
        {
            "connectionPool": "VirtualNodeConnectionPool",
            "healthCheck": "HealthCheckPolicy",
            "outlierDetection": "OutlierDetection",
            "portMapping": "PortMapping",
            "timeout": "ListenerTimeout",
            "tls": "ListenerTls",
        },
        required=("portMapping",),
    ),
    "ListenerPort": Integer(min=1, max=65535),
    "ListenerTimeout": Structure(
        {"grpc": "GrpcTimeout", "http": "HttpTimeout", "http2": "HttpTimeout", "tcp": "TcpTimeout"},
        union=True,
    ),
    "ListenerTls": Structure(
        {
            "certificate": "ListenerTlsCertificate",
            "mode": "ListenerTlsMode",
            "validation": "ListenerTlsValidationContext",
        },
        required=("certificate", "mode"),
    ),
    "ListenerTlsAcmCertificate": Structure({"certificateArn": "Arn"}, required=("certificateArn",)),
    "ListenerTlsCertificate": Structure(
        {
            "acm": "ListenerTlsAcmCertificate",
            "file": "ListenerTlsFileCertificate",
            "sds": "ListenerTlsSdsCertificate",
        },
        union=True,
    ),
    "ListenerTlsFileCertificate": Structure(
        {"certificateChain": "FilePath", "privateKey": "FilePath"},
        required=("certificateChain", "privateKey"),
    ),
    "ListenerTlsMode": String(enum=("STRICT", "PERMISSIVE", "DISABLED")),
    "ListenerTlsSdsCertificate": Structure({"secretName": "SdsSecretName"}, required=("secretName",)),
    "ListenerTlsValidationContext": Structure(
        {"subjectAlternativeNames": "SubjectAlternativeNames", "trust": "ListenerTlsValidationContextTrust"},
        required=("trust",),
    ),
    "ListenerTlsValidationContextTrust": Structure(
        {"file": "TlsValidationContextFileTrust", "sds": "TlsValidationContextSdsTrust"}, union=True
    ),
    "Listeners": ListOf("Listener"),
    "Logging": Structure({"accessLog": "AccessLog"}),
    "LoggingFormat": Structure({"json": "JsonFormat", "text": "TextFormat"}, union=True),
    "Long": Integer(),
    "MatchRange": Structure({"end": "Long", "start": "Long"}, required=("end", "start")),
    "MaxConnections": Integer(min=1),
    "MaxPendingRequests": Integer(min=1),
    "MaxRequests": Integer(min=1),
    "MaxRetries": Integer(min=0),
    "MeshServiceDiscovery": Structure({"ipPreference": "IpPreference"}),
    "MeshSpec": Structure({"egressFilter": "EgressFilter", "serviceDiscovery": "MeshServiceDiscovery"}),
    "MethodName": String(min=1, max=50),
    "OutlierDetection": Structure(
        {
            "baseEjectionDuration": "Duration",
            "interval": "Duration",
            "maxEjectionPercent": "OutlierDetectionMaxEjectionPercent",
            "maxServerErrors": "OutlierDetectionMaxServerErrors",
        },
        required=("baseEjectionDuration", "interval", "maxEjectionPercent", "maxServerErrors"),
    ),
    "OutlierDetectionMaxEjectionPercent": Integer(min=0, max=100),
    "OutlierDetectionMaxServerErrors": Integer(min=1),
    "PercentInt": Integer(min=0, max=100),
    "PortMapping": Structure(
        {"port": "PortNumber", "protocol": "PortProtocol"}, required=("port", "protocol")
    ),
    "PortNumber": Integer(min=1, max=65535),
    "PortProtocol": String(enum=("http", "tcp", "http2", "grpc")),
    "PortSet": ListOf("PortNumber"),
    "QueryParameterMatch": Structure({"exact": "String"}),
    "QueryParameterName": String(),
    "ResourceName": String(min=1, max=255),
    "RoutePriority": Integer(min=0, max=1000),
    "RouteSpec": Structure(
        {
            "grpcRoute": "GrpcRoute",
            "http2Route": "HttpRoute",
            "httpRoute": "HttpRoute",
            "priority": "RoutePriority",
            "tcpRoute": "TcpRoute",
        }
    ),
    "SdsSecretName": String(),
    "ServiceDiscovery": Structure(
        {"awsCloudMap": "AwsCloudMapServiceDiscovery", "dns": "DnsServiceDiscovery"}, union=True
    ),
    "ServiceName": String(),
    "String": String(),
    "SubjectAlternativeName": String(min=1, max=254),
    "SubjectAlternativeNameList": ListOf("SubjectAlternativeName"),
    "SubjectAlternativeNameMatchers": Structure({"exact": "SubjectAlternativeNameList"}, required=("exact",)),
    "SubjectAlternativeNames": Structure({"match": "SubjectAlternativeNameMatchers"}, required=("match",)),
    "SuffixHostname": String(min=1, max=253),
    "TcpRetryPolicyEvent": String(enum=("connection-error",)),
    "TcpRetryPolicyEvents": ListOf("TcpRetryPolicyEvent", min=1, max=1),
    "TcpRoute": Structure(
        {"action": "TcpRouteAction", "match": "TcpRouteMatch", "timeout": "TcpTimeout"}, required=("action",)
    ),
    "TcpRouteAction": Structure({"weightedTargets": "WeightedTargets"}, required=("weightedTargets",)),
    "TcpRouteMatch": Structure({"port": "ListenerPort"}),
    "TcpTimeout": Structure({"idle": "Duration"}),
    "TextFormat": String(min=1, max=1000),
    "TlsValidationContext": Structure(
        {"subjectAlternativeNames": "SubjectAlternativeNames", "trust": "TlsValidationContextTrust"},
        required=("trust",),
    ),
    "TlsValidationContextAcmTrust": Structure(
        {"certificateAuthorityArns": "CertificateAuthorityArns"}, required=("certificateAuthorityArns",)
    ),
    "TlsValidationContextFileTrust": Structure(
        {"certificateChain": "FilePath"}, required=("certificateChain",)
    ),
    "TlsValidationContextSdsTrust": Structure({"secretName": "SdsSecretName"}, required=("secretName",)),
    "TlsValidationContextTrust": Structure(
        {
            "acm": "TlsValidationContextAcmTrust",
            "file": "TlsValidationContextFileTrust",
            "sds": "TlsValidationContextSdsTrust",
        },
        union=True,
    ),
    "VirtualGatewayAccessLog": Structure({"file": "VirtualGatewayFileAccessLog"}, union=True),
    "VirtualGatewayBackendDefaults": Structure({"clientPolicy": "VirtualGatewayClientPolicy"}),
    "VirtualGatewayCertificateAuthorityArns": ListOf("Arn", min=1, max=3),
    "VirtualGatewayClientPolicy": Structure({"tls": "VirtualGatewayClientPolicyTls"}),
    "VirtualGatewayClientPolicyTls": Structure(
        {
            "certificate": "VirtualGatewayClientTlsCertificate",
            "enforce": "Boolean",
            "ports": "PortSet",
            "validation": "VirtualGatewayTlsValidationContext",
        },
        required=("validation",),
    ),
    "VirtualGatewayClientTlsCertificate": Structure(
        {
            "file": "VirtualGatewayListenerTlsFileCertificate",
            "sds": "VirtualGatewayListenerTlsSdsCertificate",
        },
        union=True,
    ),
    "VirtualGatewayConnectionPool": Structure(
        {
            "grpc": "VirtualGatewayGrpcConnectionPool",
            "http": "VirtualGatewayHttpConnectionPool",
            "http2": "VirtualGatewayHttp2ConnectionPool",
        },
        union=True,
    ),
    "VirtualGatewayFileAccessLog": Structure(
        {"format": "LoggingFormat", "path": "FilePath"}, required=("path",)
    ),
    "VirtualGatewayGrpcConnectionPool": Structure({"maxRequests": "MaxRequests"}, required=("maxRequests",)),
    "VirtualGatewayHealthCheckIntervalMillis": Integer(min=5000, max=300000),
    "VirtualGatewayHealthCheckPolicy": Structure(
        {
            "healthyThreshold": "VirtualGatewayHealthCheckThreshold",
            "intervalMillis": "VirtualGatewayHealthCheckIntervalMillis",
            "path": "String",
            "port": "PortNumber",
            "protocol": "VirtualGatewayPortProtocol",
            "timeoutMillis": "VirtualGatewayHealthCheckTimeoutMillis",
            "unhealthyThreshold": "VirtualGatewayHealthCheckThreshold",
        },
        required=("healthyThreshold", "intervalMillis", "protocol", "timeoutMillis", "unhealthyThreshold"),
    ),
    "VirtualGatewayHealthCheckThreshold": Integer(min=2, max=10),
    "VirtualGatewayHealthCheckTimeoutMillis": Integer(min=2000, max=60000),
    "VirtualGatewayHttp2ConnectionPool": Structure({"maxRequests": "MaxRequests"}, required=("maxRequests",)),
    "VirtualGatewayHttpConnectionPool": Structure(
        {"maxConnections": "MaxConnections", "maxPendingRequests": "MaxPendingRequests"},
        required=("maxConnections",),
    ),
    "VirtualGatewayListener": Structure(
        {
            "connectionPool": "VirtualGatewayConnectionPool",
            "healthCheck": "VirtualGatewayHealthCheckPolicy",
            "portMapping": "VirtualGatewayPortMapping",
            "tls": "VirtualGatewayListenerTls",
        },
        required=("portMapping",),
    ),
    "VirtualGatewayListenerTls": Structure(
        {
            "certificate": "VirtualGatewayListenerTlsCertificate",
            "mode": "VirtualGatewayListenerTlsMode",
            "validation": "VirtualGatewayListenerTlsValidationContext",
        },
        required=("certificate", "mode"),
    ),
    "VirtualGatewayListenerTlsAcmCertificate": Structure(
        {"certificateArn": "Arn"}, required=("certificateArn",)
    ),
    "VirtualGatewayListenerTlsCertificate": Structure(
        {
            "acm": "VirtualGatewayListenerTlsAcmCertificate",
            "file": "VirtualGatewayListenerTlsFileCertificate",
            "sds": "VirtualGatewayListenerTlsSdsCertificate",
        },
        union=True,
    ),
    "VirtualGatewayListenerTlsFileCertificate": Structure(
        {"certificateChain": "FilePath", "privateKey": "FilePath"},
        required=("certificateChain", "privateKey"),
    ),
    "VirtualGatewayListenerTlsMode": String(enum=("STRICT", "PERMISSIVE", "DISABLED")),
    "VirtualGatewayListenerTlsSdsCertificate": Structure(
        {"secretName": "VirtualGatewaySdsSecretName"}, required=("secretName",)
    ),
    "VirtualGatewayListenerTlsValidationContext": Structure(
        {
            "subjectAlternativeNames": "SubjectAlternativeNames",
            "trust": "VirtualGatewayListenerTlsValidationContextTrust",
        },
        required=("trust",),
    ),
    "VirtualGatewayListenerTlsValidationContextTrust": Structure(
        {
            "file": "VirtualGatewayTlsValidationContextFileTrust",
            "sds": "VirtualGatewayTlsValidationContextSdsTrust",
        },
        union=True,
    ),
    "VirtualGatewayListeners": ListOf("VirtualGatewayListener"),
    "VirtualGatewayLogging": Structure({"accessLog": "VirtualGatewayAccessLog"}),
    "VirtualGatewayPortMapping": Structure(
        {"port": "PortNumber", "protocol": "VirtualGatewayPortProtocol"}, required=("port", "protocol")
    ),
    "VirtualGatewayPortProtocol": String(enum=("http", "http2", "grpc")),
    "VirtualGatewaySdsSecretName": String(),
    "VirtualGatewaySpec": Structure(
        {
            "backendDefaults": "VirtualGatewayBackendDefaults",
            "listeners": "VirtualGatewayListeners",
            "logging": "VirtualGatewayLogging",
        },
        required=("listeners",),
    ),
    "VirtualGatewayTlsValidationContext": Structure(
        {
            "subjectAlternativeNames": "SubjectAlternativeNames",
            "trust": "VirtualGatewayTlsValidationContextTrust",
        },
        required=("trust",),
    ),
    "VirtualGatewayTlsValidationContextAcmTrust": Structure(
        {"certificateAuthorityArns": "VirtualGatewayCertificateAuthorityArns"},
        required=("certificateAuthorityArns",),
    ),
    "VirtualGatewayTlsValidationContextFileTrust": Structure(
        {"certificateChain": "FilePath"}, required=("certificateChain",)
    ),
    "VirtualGatewayTlsValidationContextSdsTrust": Structure(
        {"secretName": "VirtualGatewaySdsSecretName"}, required=("secretName",)
    ),
    "VirtualGatewayTlsValidationContextTrust": Structure(
        {
            "acm": "VirtualGatewayTlsValidationContextAcmTrust",
            "file": "VirtualGatewayTlsValidationContextFileTrust",
            "sds": "VirtualGatewayTlsValidationContextSdsTrust",
        },
        union=True,
    ),
    "VirtualNodeConnectionPool": Structure(
        {
            "grpc": "VirtualNodeGrpcConnectionPool",
            "http": "VirtualNodeHttpConnectionPool",
            "http2": "VirtualNodeHttp2ConnectionPool",
            "tcp": "VirtualNodeTcpConnectionPool",
        },
        union=True,
    ),
    "VirtualNodeGrpcConnectionPool": Structure({"maxRequests": "MaxRequests"}, required=("maxRequests",)),
    "VirtualNodeHttp2ConnectionPool": Structure({"maxRequests": "MaxRequests"}, required=("maxRequests",)),
    "VirtualNodeHttpConnectionPool": Structure(
        {"maxConnections": "MaxConnections", "maxPendingRequests": "MaxPendingRequests"},
        required=("maxConnections",),
    ),
    "VirtualNodeServiceProvider": Structure(
        {"virtualNodeName": "ResourceName"}, required=("virtualNodeName",)
    ),
    "VirtualNodeSpec": Structure(
        {
            "backendDefaults": "BackendDefaults",
            "backends": "Backends",
            "listeners": "Listeners",
            "logging": "Logging",
            "serviceDiscovery": "ServiceDiscovery",
        }
    ),
    "VirtualNodeTcpConnectionPool": Structure(
        {"maxConnections": "MaxConnections"}, required=("maxConnections",)
    ),
    "VirtualRouterListener": Structure({"portMapping": "PortMapping"}, required=("portMapping",)),
    "VirtualRouterListeners": ListOf("VirtualRouterListener"),
    "VirtualRouterServiceProvider": Structure(
        {"virtualRouterName": "ResourceName"}, required=("virtualRouterName",)
    ),
    "VirtualRouterSpec": Structure({"listeners": "VirtualRouterListeners"}),
    "VirtualServiceBackend": Structure(
        {"clientPolicy": "ClientPolicy", "virtualServiceName": "ServiceName"},
        required=("virtualServiceName",),
    ),
    "VirtualServiceProvider": Structure(
        {"virtualNode": "VirtualNodeServiceProvider", "virtualRouter": "VirtualRouterServiceProvider"},
        union=True,
    ),
    "VirtualServiceSpec": Structure({"provider": "VirtualServiceProvider"}),
    "WeightedTarget": Structure(
        {"port": "ListenerPort", "virtualNode": "ResourceName", "weight": "PercentInt"},
        required=("virtualNode", "weight"),
    ),
    "WeightedTargets": ListOf("WeightedTarget", min=1, max=10),
}

# Members the model marks optional but App Mesh rejects when missing (a Duration needs both value and unit).
# Kept apart from SHAPES so the table stays an exact mirror of the service model.
ALSO_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {"Duration": ("unit", "value")}

Report = Callable[[str, str, Severity], None]  # (path, message, severity)


def join(path: str, member: str) -> str:
    """`spec` + `listeners` -> `spec.listeners`; list indexes are appended by the caller as `[i]`."""
    return f"{path}.{member}" if path else member


def _limits(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low}..{high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _type_name(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case dict():
            return "an object"
        case None:
            return "null"
    return type(value).__name__


class _Invalid:
    """Marks a value that failed its shape; `ShapeChecker.check` drops it from the cleaned copy."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


@dataclass(slots=True)
class ShapeChecker:
    """Walks a JSON-like value against `SHAPES`, reporting every problem through `report`.

    `check` also returns a cleaned copy: unknown members and invalid values are dropped, and a structure that
    loses a required member (or breaks its union) becomes `INVALID` itself, as does the whole value if its
    top is invalid. The copy lets later rules still look at the valid parts of a resource with errors; as
    dropping a list item renumbers the items after it, such lists are recorded in `shifted`.
    """

    report: Report
    shifted: list[str] = field(default_factory=list)  # lists that lost items: later indexes moved down
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def check(self, value: object, shape_name: str, path: str) -> object:
        shape = SHAPES[shape_name]
        match shape:
            case Structure():
                return self._structure(value, shape, path, shape.required + ALSO_REQUIRED.get(shape_name, ()))
            case ListOf():
                return self._list(value, shape, path)
            case String():
                return self._string(value, shape, path)
            case Integer():
                return self._integer(value, shape, path)
            case Boolean():
                if not isinstance(value, bool):
                    return self._invalid(path, f"expected true or false, got {_type_name(value)}")
                return value

    def _invalid(self, path: str, message: str) -> _Invalid:
        self.report(path, message, Severity.ERROR)
        return INVALID

    def _structure(self, value: object, shape: Structure, path: str, required: tuple[str, ...]) -> object:
        if not isinstance(value, dict):
            return self._invalid(path, f"expected an object, got {_type_name(value)}")
        for member in value:
            if member not in shape.members:
                self.report(join(path, str(member)), "unsupported field, ignored", Severity.WARNING)
        valid = True
        for member in required:
            if value.get(member) is None:
                self._invalid(join(path, member), "required member is missing")
                valid = False
        present = [member for member in shape.members if value.get(member) is not None]
        if shape.union and len(present) != 1:
            choices = ", ".join(shape.members)
            got = f"got {', '.join(present)}" if present else "got none"
            self._invalid(path, f"exactly one of {choices} must be set ({got})")
            valid = False
        cleaned: dict[str, object] = {}
        for member in present:
            checked = self.check(value[member], shape.members[member], join(path, member))
            if checked is INVALID:
                valid = valid and member not in required
            else:
                cleaned[member] = checked
        if shape.union and len(cleaned) != 1:
            valid = False  # its one member was invalid
        return cleaned if valid else INVALID

    def _list(self, value: object, shape: ListOf, path: str) -> object:
        if not isinstance(value, list):
            return self._invalid(path, f"expected a list, got {_type_name(value)}")
        count = len(value)
        if (shape.min is not None and count < shape.min) or (shape.max is not None and count > shape.max):
            self.report(path, f"has {count} items; allowed {_limits(shape.min, shape.max)}", Severity.ERROR)
        checked = [self.check(item, shape.member, f"{path}[{index}]") for index, item in enumerate(value)]
        cleaned = [item for item in checked if item is not INVALID]
        if len(cleaned) != count:
            self.shifted.append(path)
        return cleaned

    def _string(self, value: object, shape: String, path: str) -> object:
        if not isinstance(value, str):
            return self._invalid(path, f"expected a string, got {_type_name(value)}")
        allowed = shape.enum or shape.documented_enum
        if allowed is not None:
            if value not in allowed:
                return self._invalid(path, f"{value!r} is not one of {', '.join(allowed)}")
            return value
        length = len(value)
        if (shape.min is not None and length < shape.min) or (shape.max is not None and length > shape.max):
            return self._invalid(
                path, "empty" if length == 0 else f"length {length} is not in {_limits(shape.min, shape.max)}"
            )
        if shape.pattern is not None:
            pattern = self._patterns.get(shape.pattern)
            if pattern is None:
                pattern = self._patterns[shape.pattern] = re.compile(shape.pattern)
            if not pattern.search(value):
                return self._invalid(path, f"{value!r} does not match {shape.pattern}")
        return value

    def _integer(self, value: object, shape: Integer, path: str) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            return self._invalid(path, f"expected an integer, got {_type_name(value)} {value!r}")
        if (shape.min is not None and value < shape.min) or (shape.max is not None and value > shape.max):
            return self._invalid(path, f"{value} is not in {_limits(shape.min, shape.max)}")
        return value


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def to_api_members(value: object, shape_name: str, *, coerce_scalars: bool = False) -> object:
    """Rename members to the API's spelling by walking `shape_name`, matching names case-insensitively.

    CloudFormation spells members in PascalCase (`PortMapping`, `DNS`, `HTTP2`, `TLS`, `ACM`) and the
    Kubernetes CRDs in camelCase with a few capitalised acronyms (`certificateARN`); both map one-to-one onto
    the API's member names ignoring case. Members no shape knows are kept as written, so the checker reports
    them. With `coerce_scalars` (CloudFormation, where every scalar may arrive as a string), integer and
    boolean strings become numbers and booleans where the shape wants them, and numbers become strings where
    it wants a string.
    """
    shape = SHAPES[shape_name]
    match shape:
        case Structure() if isinstance(value, dict):
            by_lower = {member.lower(): member for member in shape.members}
            out: dict[str, object] = {}
            for key, item in value.items():
                member = by_lower.get(str(key).lower())
                if member is None:
                    out[str(key)] = item
                else:
                    out[member] = to_api_members(item, shape.members[member], coerce_scalars=coerce_scalars)
            return out
        case ListOf() if isinstance(value, list):
            return [to_api_members(item, shape.member, coerce_scalars=coerce_scalars) for item in value]
        case Integer() if (
            coerce_scalars and isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip())
        ):
            return int(value)
        case Boolean() if coerce_scalars and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        case String() if coerce_scalars and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return value
