//! Carrying out one SCIM operation once it is routed and authenticated: reads and writes of
//! single resources, discovery documents, and Bulk, with the audit lines and error mapping of
//! writes.

use super::error::{ScimError, Version};
use super::listing::list;
use super::query::{respond, Query};
use super::{
    discovery, mapping, method_not_allowed, only_get, urn, v1, v2, Conditions, Context, Endpoint,
    Reply, Resource, ScimService, BULK_MAX_OPERATIONS,
};
use crate::provisioning::Provisioner;
use http::{Method, StatusCode};
use serde_json::{json, Value};

impl ScimService {
    /// One SCIM operation, independent of HTTP so Bulk can run it too.
    pub(super) async fn execute(
        &self,
        ctx: &Context,
        method: &Method,
        endpoint: Endpoint,
        query: &Query,
        body: Option<Value>,
        conditions: &Conditions,
    ) -> Result<Reply, ScimError> {
        let v = ctx.version;
        let discovery_base = ctx.origin_prefix.clone();
        match endpoint {
            Endpoint::ServiceProviderConfig => {
                only_get(method)?;
                let doc = match v {
                    Version::V1 => v1::service_provider_config(
                        "https://github.com/scimgate/scimgate#readme",
                        self.settings.max_results,
                        &self.auth.schemes(),
                    ),
                    Version::V2 => discovery::service_provider_config(
                        &discovery_base,
                        self.settings.max_results,
                        self.max_body_bytes,
                        &self.auth.schemes(),
                    ),
                };
                Ok(Reply::json(StatusCode::OK, doc))
            }
            Endpoint::ResourceTypes(id) => {
                only_get(method)?;
                let mapped = self
                    .provisioner
                    .as_ref()
                    .map(|p| p.policy().config.user_attributes.clone())
                    .unwrap_or_else(crate::builtin::default_user_attributes);
                let types = discovery::resource_types(&discovery_base, &mapped);
                match id {
                    None => Ok(Reply::json(StatusCode::OK, v2::list(types.len(), 1, types))),
                    Some(id) => types
                        .into_iter()
                        .find(|t| {
                            t["id"]
                                .as_str()
                                .is_some_and(|i| i.eq_ignore_ascii_case(&id))
                        })
                        .map(|t| Reply::json(StatusCode::OK, t))
                        .ok_or_else(|| {
                            ScimError::not_found(format!("resource type {id} not found"))
                        }),
                }
            }
            Endpoint::Schemas(id) => {
                only_get(method)?;
                let schemas = match v {
                    Version::V1 => v1::schemas(),
                    Version::V2 => {
                        let policy = self.provisioner.as_ref().map(|p| p.policy());
                        let mapped = policy
                            .as_ref()
                            .map(|p| p.config.user_attributes.clone())
                            .unwrap_or_else(crate::builtin::default_user_attributes);
                        let external = policy
                            .as_ref()
                            .is_none_or(|p| p.config.stores_user_external_id());
                        discovery::schemas(&discovery_base, &mapped, external)
                    }
                };
                match id {
                    None => Ok(Reply::json(
                        StatusCode::OK,
                        list(v, schemas.len(), 1, schemas),
                    )),
                    Some(id) => find_schema(v, schemas, &id)
                        .map(|s| Reply::json(StatusCode::OK, s))
                        .ok_or_else(|| ScimError::not_found(format!("schema {id} not found"))),
                }
            }
            Endpoint::Me => Err(ScimError::new(
                StatusCode::NOT_IMPLEMENTED,
                "/Me is not supported: SCIM callers are identity providers, not users",
            )),
            Endpoint::Bulk => {
                if v == Version::V1 {
                    return Err(ScimError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "Bulk is not supported in SCIM 1.1",
                    ));
                }
                if method != Method::POST {
                    return Err(method_not_allowed(method.as_str(), "Bulk", false));
                }
                Box::pin(self.bulk(ctx, body.unwrap_or(Value::Null))).await
            }
            Endpoint::Search(resource) => {
                if method != Method::POST {
                    return Err(method_not_allowed(method.as_str(), ".search", false));
                }
                let query = Query::from_search(body.as_ref().unwrap_or(&Value::Null))?;
                let p = self.provisioner()?;
                match resource {
                    Some(r) => self.list(ctx, p, r, &query).await,
                    None => self.search_all(ctx, p, &query).await,
                }
            }
            Endpoint::Resources(resource, id) => {
                let p = self.provisioner()?;
                match (method.as_str(), id) {
                    ("GET", None) => self.list(ctx, p, resource, query).await,
                    ("GET", Some(id)) => {
                        let rendered = self.read(ctx, p, resource, &id).await?;
                        if let (Version::V2, Some(list)) = (v, &conditions.if_none_match) {
                            if let Some(tag) = rendered["meta"]["version"].as_str() {
                                if Conditions::matches(list, tag) {
                                    let mut r = Reply::empty(StatusCode::NOT_MODIFIED);
                                    r.etag = Some(tag.to_string());
                                    return Ok(r);
                                }
                            }
                        }
                        Ok(Reply::resource(
                            StatusCode::OK,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("POST", None) => {
                        let body = body.unwrap_or(Value::Null);
                        let rendered = match resource {
                            Resource::Users => {
                                let change = match v {
                                    Version::V1 => v1::parse_user(&body, v1::Mode::Create),
                                    Version::V2 => v2::parse_user(&body, v1::Mode::Create),
                                };
                                let change = audited(p, ctx, "create_user", "", change)?;
                                warn_unstored(p, "users_create", &body, &change);
                                let user = p
                                    .create_user(&ctx.actor, change)
                                    .await
                                    .map_err(|e| user_write_error(p, e))?;
                                ctx.render_user(&user)
                            }
                            Resource::Groups => {
                                let change = v1::parse_group(&body, v1::Mode::Create);
                                let change = audited(p, ctx, "create_group", "", change)?;
                                let group = p.create_group(&ctx.actor, change).await?;
                                ctx.render_group(&group)
                            }
                        };
                        Ok(Reply::resource(
                            StatusCode::CREATED,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("PUT", Some(id)) | ("PATCH", Some(id)) => {
                        let body = body.unwrap_or(Value::Null);
                        let patch = method == Method::PATCH;
                        // The record read for the version check (and for applying a PATCH) is
                        // handed on, so the update does not read it from the platform again.
                        let rendered = match resource {
                            Resource::Users => {
                                let op = "update_user";
                                let record = p.user_for_change(&ctx.actor, op, &id).await?;
                                let target = record.user_name.clone();
                                let current = ctx.render_user(&record);
                                audited(p, ctx, op, &target, conditions.check_write(&current))?;
                                // A 2.0 PATCH is checked as the patched resource: what the
                                // operations added is in it, next to what is already stored.
                                let parsed = match (v, patch) {
                                    (Version::V1, false) => {
                                        v1::parse_user(&body, v1::Mode::Replace).map(|c| (c, None))
                                    }
                                    (Version::V1, true) => {
                                        v1::parse_user(&body, v1::Mode::Patch).map(|c| (c, None))
                                    }
                                    (Version::V2, false) => {
                                        v2::parse_user(&body, v1::Mode::Replace).map(|c| (c, None))
                                    }
                                    (Version::V2, true) => v2::patched_user(&current, &body)
                                        .map(|(change, doc)| (change, Some(doc))),
                                };
                                let (change, patched) = audited(p, ctx, op, &target, parsed)?;
                                let operation = if patch {
                                    "users_patch"
                                } else {
                                    "users_replace"
                                };
                                warn_unstored(
                                    p,
                                    operation,
                                    patched.as_ref().unwrap_or(&body),
                                    &change,
                                );
                                let user = p
                                    .update_read_user(&ctx.actor, record, change)
                                    .await
                                    .map_err(|e| user_write_error(p, e))?;
                                ctx.render_user(&user)
                            }
                            Resource::Groups => {
                                let op = "update_group";
                                let record = p.group_for_change(&ctx.actor, op, &id).await?;
                                let target = record.platform_name.clone();
                                // Rendered (all its members) only to compare versions.
                                if conditions.if_match.is_some() {
                                    let check = conditions.check_write(&ctx.render_group(&record));
                                    audited(p, ctx, op, &target, check)?;
                                }
                                let change = match (v, patch) {
                                    (_, false) => v1::parse_group(&body, v1::Mode::Replace),
                                    (Version::V1, true) => v1::parse_group(&body, v1::Mode::Patch),
                                    (Version::V2, true) => v2::patch_group(&body),
                                };
                                let change = audited(p, ctx, op, &target, change)?;
                                let group = p.update_read_group(&ctx.actor, record, change).await?;
                                if patch && v == Version::V2 && self.settings.group_patch_no_content
                                {
                                    return Ok(Reply::empty(StatusCode::NO_CONTENT));
                                }
                                ctx.render_group(&group)
                            }
                        };
                        Ok(Reply::resource(
                            StatusCode::OK,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("DELETE", Some(id)) => {
                        if v == Version::V2 && conditions.if_match.is_some() {
                            let (current, target) = match resource {
                                Resource::Users => {
                                    let record =
                                        p.user_for_change(&ctx.actor, "delete_user", &id).await?;
                                    (ctx.render_user(&record), record.user_name)
                                }
                                Resource::Groups => {
                                    let record =
                                        p.group_for_change(&ctx.actor, "delete_group", &id).await?;
                                    (ctx.render_group(&record), record.platform_name)
                                }
                            };
                            let op = match resource {
                                Resource::Users => "delete_user",
                                Resource::Groups => "delete_group",
                            };
                            audited(p, ctx, op, &target, conditions.check_write(&current))?;
                        }
                        match resource {
                            Resource::Users => p.delete_user(&ctx.actor, &id).await?,
                            Resource::Groups => p.delete_group(&ctx.actor, &id).await?,
                        }
                        Ok(Reply::empty(match v {
                            Version::V1 => StatusCode::OK,
                            Version::V2 => StatusCode::NO_CONTENT,
                        }))
                    }
                    (m, id) => Err(method_not_allowed(
                        m,
                        match resource {
                            Resource::Users => "Users",
                            Resource::Groups => "Groups",
                        },
                        id.is_some(),
                    )),
                }
            }
        }
    }

    /// SCIM 2.0 Bulk: operations in order, `bulkId:` references replaced by the ids created
    /// earlier in the request, stopping after `failOnErrors` errors.
    async fn bulk(&self, ctx: &Context, body: Value) -> Result<Reply, ScimError> {
        let ops = body
            .get("Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ScimError::bad_request("invalidSyntax", "a BulkRequest needs Operations")
            })?;
        if ops.len() > BULK_MAX_OPERATIONS {
            return Err(ScimError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {BULK_MAX_OPERATIONS} operations per Bulk request"),
            ));
        }
        let fail_on = body
            .get("failOnErrors")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let mut created: Vec<(String, String)> = Vec::new();
        let mut results = Vec::new();
        let mut errors = 0usize;
        for op in ops {
            if fail_on.is_some_and(|n| errors >= n) {
                break;
            }
            let method = op
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_uppercase();
            let bulk_id = op.get("bulkId").and_then(Value::as_str).map(str::to_string);
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let outcome = async {
                let path = substitute_str(path, &created)?;
                let data = match op.get("data") {
                    Some(d) => Some(substitute(d.clone(), &created)?),
                    None => None,
                };
                let method = Method::from_bytes(method.as_bytes())
                    .map_err(|_| ScimError::bad_request("invalidSyntax", "unknown bulk method"))?;
                if !matches!(
                    method,
                    Method::POST | Method::PUT | Method::PATCH | Method::DELETE
                ) {
                    return Err(ScimError::bad_request(
                        "invalidSyntax",
                        "bulk methods are POST, PUT, PATCH and DELETE",
                    ));
                }
                let endpoint = self.endpoint(Version::V2, &path)?;
                if !matches!(endpoint, Endpoint::Resources(..)) {
                    return Err(ScimError::bad_request(
                        "invalidPath",
                        "bulk operations address Users and Groups",
                    ));
                }
                let conditions = Conditions {
                    if_match: op
                        .get("version")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    if_none_match: None,
                };
                Box::pin(self.execute(ctx, &method, endpoint, &Query::default(), data, &conditions))
                    .await
            }
            .await;
            let mut result = json!({"method": method});
            if let Some(b) = &bulk_id {
                result["bulkId"] = json!(b);
            }
            match outcome {
                Ok(reply) => {
                    if let (Some(b), Some(body)) = (&bulk_id, &reply.body) {
                        if let Some(id) = body["id"].as_str() {
                            created.push((b.clone(), id.to_string()));
                        }
                    }
                    if let Some(l) = reply.location {
                        result["location"] = json!(l);
                    }
                    if let Some(e) = reply.etag {
                        result["version"] = json!(e);
                    }
                    result["status"] = json!(reply.status.as_u16().to_string());
                }
                Err(e) => {
                    errors += 1;
                    result["status"] = json!(e.status.as_u16().to_string());
                    let mut response = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": e.status.as_u16().to_string(),
                        "detail": e.detail,
                    });
                    if let Some(t) = e.scim_type {
                        response["scimType"] = json!(t);
                    }
                    result["response"] = response;
                }
            }
            results.push(result);
        }
        Ok(Reply::json(
            StatusCode::OK,
            json!({"schemas": [urn::BULK_RESPONSE], "Operations": results}),
        ))
    }
}

/// One WARN line per user write that carries attributes the mapping cannot store, naming them
/// (never their values): the request succeeds, so without it the loss would go unnoticed.
fn warn_unstored(
    p: &Provisioner,
    operation: &'static str,
    body: &Value,
    change: &crate::provisioning::UserChange,
) {
    let policy = p.policy();
    let names = mapping::unstored(
        body,
        change,
        &policy.config.user_attributes,
        policy.config.stores_user_external_id(),
    );
    if !names.is_empty() {
        tracing::warn!(
            operation,
            attributes = %names.join(", "),
            "the request carries SCIM attributes the attribute mapping does not store; they were not written (map them in [provisioning.user_attributes])"
        );
    }
}

/// A user write the platform refused because the configured mapping names a property its
/// `UserExtensions` shape lacks: the gateway's fault, so a 500 that names the setting to fix,
/// and an ERROR line for the operator. Anything else converts as usual.
fn user_write_error(p: &Provisioner, e: crate::provisioning::ProvisionError) -> ScimError {
    let crate::provisioning::ProvisionError::Platform(
        crate::platform::PlatformError::MissingProperties { properties },
    ) = &e
    else {
        return e.into();
    };
    let policy = p.policy();
    let settings: Vec<String> = mapping::property_settings(&policy.config)
        .into_iter()
        .filter(|(_, property)| properties.contains(property))
        .map(|(setting, property)| format!("{setting} = {property:?}"))
        .collect();
    let settings = if settings.is_empty() {
        "provisioning.user_attributes or provisioning.external_id_property".to_string()
    } else {
        settings.join(", ")
    };
    let missing = properties
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::error!(
        properties = %missing,
        settings = %settings,
        "the attribute mapping names user extension properties the platform lacks; correct the setting or add the properties to the UserExtensions thing shape"
    );
    ScimError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "the gateway's configuration does not fit the platform: {settings} names a user extension property the platform's UserExtensions thing shape does not have ({missing}); an operator must correct the setting or add the property to the shape"
        ),
    )
}

/// A write the SCIM layer refuses itself (a body it cannot parse, a failed precondition) gets
/// its audit line here, as the provisioning core's refusals get theirs.
fn audited<T>(
    p: &Provisioner,
    ctx: &Context,
    operation: &str,
    target: &str,
    result: Result<T, ScimError>,
) -> Result<T, ScimError> {
    if let Err(e) = &result {
        p.audit_refusal(&ctx.actor, operation, target, &e.detail);
    }
    result
}

/// Replaces `bulkId:<id>` references with the ids the earlier operations created.
fn substitute(value: Value, created: &[(String, String)]) -> Result<Value, ScimError> {
    Ok(match value {
        Value::String(s) => Value::String(substitute_str(&s, created)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| substitute(i, created))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| Ok((k, substitute(v, created)?)))
                .collect::<Result<_, ScimError>>()?,
        ),
        other => other,
    })
}

fn substitute_str(s: &str, created: &[(String, String)]) -> Result<String, ScimError> {
    let Some(pos) = s.find("bulkId:") else {
        return Ok(s.to_string());
    };
    let reference = &s[pos + "bulkId:".len()..];
    let end = reference.find(['/', '"', ' ']).unwrap_or(reference.len());
    let wanted = &reference[..end];
    let id = created
        .iter()
        .find(|(b, _)| b == wanted)
        .map(|(_, id)| id)
        .ok_or_else(|| {
            ScimError::bad_request(
                "invalidValue",
                format!("bulkId {wanted} does not name an earlier operation"),
            )
        })?;
    Ok(format!("{}{id}{}", &s[..pos], &reference[end..]))
}

fn find_schema(version: Version, schemas: Vec<Value>, id: &str) -> Option<Value> {
    let wanted = match version {
        Version::V1 if id.eq_ignore_ascii_case("Groups") || id.eq_ignore_ascii_case("Group") => 1,
        Version::V1
            if id.eq_ignore_ascii_case("Users")
                || id.eq_ignore_ascii_case("User")
                || id.eq_ignore_ascii_case(v1::CORE) =>
        {
            0
        }
        Version::V1 => return None,
        Version::V2 => {
            return schemas
                .into_iter()
                .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
        }
    };
    schemas.into_iter().nth(wanted)
}
