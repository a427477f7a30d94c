//! Listings and searches (`GET` on a collection, `.search`): equality filters answered by
//! lookups, anything else by reading and filtering the whole collection, then sorted and paged.

use super::error::{ScimError, Version};
use super::filter::{self, AttrPath, Filter};
use super::query::{
    case_exact, distinct, group_lookup_keys, respond, sort, user_lookup_keys, GroupKey, Query,
    UserKey, GROUP_ATTRIBUTES, USER_ATTRIBUTES,
};
use super::{v1, v2, Context, Reply, Resource, ScimService};
use crate::platform::names;
use crate::provisioning::{group_id_for, id_for, Provisioner};
use http::StatusCode;
use serde_json::{json, Value};

impl ScimService {
    pub(super) async fn read(
        &self,
        ctx: &Context,
        p: &Provisioner,
        resource: Resource,
        id: &str,
    ) -> Result<Value, ScimError> {
        Ok(match resource {
            Resource::Users => ctx.render_user(&p.get_user(id).await?),
            Resource::Groups => ctx.render_group(&p.get_group(id).await?),
        })
    }

    pub(super) async fn list(
        &self,
        ctx: &Context,
        p: &Provisioner,
        resource: Resource,
        query: &Query,
    ) -> Result<Reply, ScimError> {
        let (total, start, items) = match resource {
            Resource::Users => self.list_users(ctx, p, query).await?,
            Resource::Groups => self.list_groups(ctx, p, query).await?,
        };
        let items = items
            .into_iter()
            .map(|v| respond(ctx.version, v, query))
            .collect();
        Ok(Reply::json(
            StatusCode::OK,
            list(ctx.version, total, start, items),
        ))
    }

    /// A search at the root covers users and groups; a filter that names attributes only one of
    /// them has simply matches nothing of the other.
    pub(super) async fn search_all(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<Reply, ScimError> {
        let unpaged = Query {
            start_index: 1,
            count: Some(self.settings.max_results),
            ..query.clone()
        };
        let users = self.list_users(ctx, p, &unpaged).await;
        let groups = self.list_groups(ctx, p, &unpaged).await;
        let mut all = Vec::new();
        match (users, groups) {
            (Err(e), Err(_)) => return Err(e),
            (u, g) => {
                for part in [u, g].into_iter().flatten() {
                    all.extend(part.2);
                }
            }
        }
        let (total, start, page) = self.page(all, query);
        let page = page
            .into_iter()
            .map(|v| respond(ctx.version, v, query))
            .collect();
        Ok(Reply::json(
            StatusCode::OK,
            list(ctx.version, total, start, page),
        ))
    }

    /// Users a lookup names, read one by one; the whole filter is still applied to them.
    async fn lookup_users(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
        filter: Option<&Filter>,
        names: Vec<String>,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let mut found = p.read_users(distinct(names)).await?;
        // Two spellings may reach one user (a userName and an id, say).
        let mut seen = std::collections::HashSet::new();
        found.retain(|u| seen.insert(u.id.clone()));
        let mut kept: Vec<Value> = found
            .iter()
            .map(|u| ctx.render_user(u))
            .filter(|v| filter.is_none_or(|f| filter::matches(f, v, &case_exact)))
            .collect();
        sort(&mut kept, query, |v| v, "userName");
        Ok(self.page(kept, query))
    }

    /// Lists users: cheap filters (on `userName`/`id`) run on names alone and only the page is
    /// read in full; anything else reads candidates in full, up to `max_filter_candidates`.
    async fn list_users(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(ctx.dialect(), USER_ATTRIBUTES)?;
        // `userName eq "x"` is what every identity provider sends before a create, and the
        // platform looks names up case-insensitively, as SCIM compares userName: one read per
        // name asked for (and an `or` of them) answers it, however many users the platform
        // holds. The filter is still applied to what was read.
        if let Some(keys) = filter.as_ref().and_then(user_lookup_keys) {
            let mut names = Vec::new();
            let mut by_lookup = true;
            for key in keys {
                match key {
                    UserKey::Name(name) => names.push(name),
                    // An externalId kept as a tag is found in one call; kept in an extension
                    // property, it can only be found by reading the candidates (below).
                    UserKey::ExternalId(external_id) => {
                        match p.user_names_with_external_id(&external_id).await? {
                            Some(found) => names.extend(found),
                            None => {
                                by_lookup = false;
                                break;
                            }
                        }
                    }
                }
            }
            if by_lookup {
                return self
                    .lookup_users(ctx, p, query, filter.as_ref(), names)
                    .await;
            }
        }
        let mut names = p.user_names().await?;
        let by_user_name = query.sort_by.as_ref().is_none_or(|path| {
            path.urn.is_none()
                && path.sub_attr.is_none()
                && path.attr.eq_ignore_ascii_case("userName")
        });
        if filter.is_none() && by_user_name {
            // A plain listing, as an identity provider's import pages through it: the order the
            // general path gives (userName compared folded, stable), without a JSON object per
            // name the platform holds.
            if query.descending {
                names.sort_by_cached_key(|n| std::cmp::Reverse(names::fold(n)));
            } else {
                names.sort_by_cached_key(|n| names::fold(n));
            }
            return self.user_page(ctx, p, names, query).await;
        }
        let cheap = |path: &AttrPath| {
            path.urn.is_none()
                && path.sub_attr.is_none()
                && (path.attr.eq_ignore_ascii_case("userName")
                    || path.attr.eq_ignore_ascii_case("id"))
        };
        let filter_is_cheap = filter
            .as_ref()
            .is_none_or(|f| filter::attribute_paths(f).iter().all(cheap));
        let sort_is_cheap = query.sort_by.as_ref().is_none_or(cheap);
        if filter_is_cheap && sort_is_cheap {
            let mut kept: Vec<(String, Value)> = names
                .into_iter()
                .map(|n| {
                    let stub = json!({"id": id_for(&n), "userName": n});
                    (n, stub)
                })
                .filter(|(_, stub)| {
                    filter
                        .as_ref()
                        .is_none_or(|f| filter::matches(f, stub, &case_exact))
                })
                .collect();
            sort(&mut kept, query, |(_, v)| v, "userName");
            let names = kept.into_iter().map(|(n, _)| n).collect();
            return self.user_page(ctx, p, names, query).await;
        }
        if names.len() > self.settings.max_filter_candidates {
            return Err(ScimError::bad_request(
                "tooMany",
                format!(
                    "this filter needs the attributes of all {} users (more than scim.max_filter_candidates = {}); filter on userName instead",
                    names.len(),
                    self.settings.max_filter_candidates
                ),
            ));
        }
        let rendered: Vec<Value> = p
            .read_users(names)
            .await?
            .iter()
            .map(|u| ctx.render_user(u))
            .collect();
        let mut kept: Vec<Value> = rendered
            .into_iter()
            .filter(|v| {
                filter
                    .as_ref()
                    .is_none_or(|f| filter::matches(f, v, &case_exact))
            })
            .collect();
        sort(&mut kept, query, |v| v, "userName");
        Ok(self.page(kept, query))
    }

    async fn list_groups(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(ctx.dialect(), GROUP_ATTRIBUTES)?;
        let policy = p.policy();
        // The lookups identity providers make before they create or link a group (`displayName`,
        // `id` or `externalId eq`, or an `or` of them) read only the groups they name: a name
        // or id is read directly, an externalId is found by its tag in one call. The filter is
        // still applied to what was read.
        if let Some(keys) = filter.as_ref().and_then(group_lookup_keys) {
            let mut names = Vec::new();
            for key in keys {
                match key {
                    GroupKey::DisplayName(display) => names.push(policy.platform_group(&display)),
                    GroupKey::Name(name) => names.push(name),
                    GroupKey::ExternalId(external_id) => {
                        names.extend(p.group_names_with_external_id(&external_id).await?)
                    }
                }
            }
            let mut rendered: Vec<Value> = p
                .read_groups(distinct(names))
                .await?
                .iter()
                .map(|g| ctx.render_group(g))
                .filter(|v| {
                    filter
                        .as_ref()
                        .is_none_or(|f| filter::matches(f, v, &case_exact))
                })
                .collect();
            sort(&mut rendered, query, |v| v, "displayName");
            return Ok(self.page(rendered, query));
        }
        let cheap = |path: &AttrPath| {
            path.urn.is_none()
                && path.sub_attr.is_none()
                && (path.attr.eq_ignore_ascii_case("displayName")
                    || path.attr.eq_ignore_ascii_case("id"))
        };
        let filter_is_cheap = filter
            .as_ref()
            .is_none_or(|f| filter::attribute_paths(f).iter().all(cheap));
        let sort_is_cheap = query.sort_by.as_ref().is_none_or(cheap);
        let names = p.group_names().await?;
        let mut kept: Vec<(String, Value)> = names
            .into_iter()
            .map(|n| {
                let stub = json!({"id": group_id_for(&n), "displayName": policy.idp_group(&n)});
                (n, stub)
            })
            .collect();
        if filter_is_cheap {
            kept.retain(|(_, stub)| {
                filter
                    .as_ref()
                    .is_none_or(|f| filter::matches(f, stub, &case_exact))
            });
        }
        if filter_is_cheap && sort_is_cheap {
            sort(&mut kept, query, |(_, v)| v, "displayName");
            let (total, start, page) = self.page(kept, query);
            let items = p
                .read_groups(page.into_iter().map(|(n, _)| n).collect())
                .await?
                .iter()
                .map(|g| ctx.render_group(g))
                .collect();
            return Ok((total, start, items));
        }
        if kept.len() > self.settings.max_filter_candidates {
            return Err(ScimError::bad_request(
                "tooMany",
                "this filter needs every group's members; filter on displayName instead",
            ));
        }
        let mut rendered: Vec<Value> = p
            .read_groups(kept.into_iter().map(|(n, _)| n).collect())
            .await?
            .iter()
            .map(|g| ctx.render_group(g))
            .collect();
        rendered.retain(|v| {
            filter
                .as_ref()
                .is_none_or(|f| filter::matches(f, v, &case_exact))
        });
        sort(&mut rendered, query, |v| v, "displayName");
        Ok(self.page(rendered, query))
    }

    /// The page of `names` (filtered and in order) the query asks for, read and rendered.
    async fn user_page(
        &self,
        ctx: &Context,
        p: &Provisioner,
        names: Vec<String>,
        query: &Query,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let (total, start, page) = self.page(names, query);
        let items = p
            .read_users(page)
            .await?
            .iter()
            .map(|u| ctx.render_user(u))
            .collect();
        Ok((total, start, items))
    }

    /// 1-based paging; without `count`, everything up to `scim.max_results` (some identity
    /// providers never page and must still see every group).
    fn page<T>(&self, items: Vec<T>, query: &Query) -> (usize, usize, Vec<T>) {
        let total = items.len();
        let start = query.start_index.max(1);
        let count = query
            .count
            .unwrap_or(self.settings.max_results)
            .min(self.settings.max_results);
        let page = items.into_iter().skip(start - 1).take(count).collect();
        (total, start, page)
    }
}

pub(super) fn list(version: Version, total: usize, start: usize, items: Vec<Value>) -> Value {
    if version == Version::V2 {
        return v2::list(total, start, items);
    }
    json!({
        "totalResults": total,
        "itemsPerPage": items.len(),
        "startIndex": start,
        "schemas": [v1::CORE],
        "Resources": items,
    })
}
