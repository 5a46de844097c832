//! The address space: browse paths to NodeIds, and browsing a subtree into
//! ready-to-paste tag entries (`edge-agent opcua browse`).

use std::time::Duration;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowsePath, BrowseResultMask, NodeClass,
    NodeClassMask, NodeId, ObjectId, QualifiedName, ReadValueId, ReferenceDescription,
    ReferenceTypeId, RelativePath, RelativePathElement, TimestampsToReturn, Variant,
};

use crate::config::{NodeRef, Tag};

/// Per tag, its NodeId: given, or its browse path resolved from the Objects
/// folder (`None` when the server has no such path).
pub async fn resolve(session: &Session, tags: &[Tag], timeout: Duration) -> Vec<Option<NodeId>> {
    let mut out: Vec<Option<NodeId>> = tags
        .iter()
        .map(|t| match &t.node {
            NodeRef::Id(n) => Some(n.clone()),
            NodeRef::Path(_) => None,
        })
        .collect();
    let paths: Vec<(usize, BrowsePath)> = tags
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.node {
            NodeRef::Path(p) => Some((i, browse_path(p))),
            NodeRef::Id(_) => None,
        })
        .collect();
    if paths.is_empty() {
        return out;
    }
    let req: Vec<BrowsePath> = paths.iter().map(|(_, p)| p.clone()).collect();
    let res = tokio::time::timeout(timeout, session.translate_browse_paths_to_node_ids(&req)).await;
    let Ok(Ok(results)) = res else {
        return out;
    };
    for ((i, _), r) in paths.iter().zip(results) {
        if r.status_code.is_good() {
            out[*i] = r
                .targets
                .and_then(|t| t.into_iter().next())
                .map(|t| t.target_id.node_id);
        }
    }
    out
}

/// `2:Line1/2:Temp` from the Objects folder.
fn browse_path(p: &str) -> BrowsePath {
    let elements = p
        .split('/')
        .map(|el| {
            let (ns, name) = match el.split_once(':') {
                Some((ns, name)) => (ns.parse().unwrap_or(0), name),
                None => (0, el),
            };
            RelativePathElement {
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                is_inverse: false,
                include_subtypes: true,
                target_name: QualifiedName::new(ns, name),
            }
        })
        .collect();
    BrowsePath {
        starting_node: ObjectId::ObjectsFolder.into(),
        relative_path: RelativePath {
            elements: Some(elements),
        },
    }
}

/// A variable found by browsing.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Browse names from the start node, for the signal name and a comment.
    pub path: Vec<String>,
    pub node: NodeId,
    pub data_type: Option<NodeId>,
    pub value_rank: Option<i32>,
}

/// The children (objects and variables) of `node`, following continuation points.
async fn children(session: &Session, node: &NodeId) -> Result<Vec<ReferenceDescription>, String> {
    let desc = BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
        result_mask: BrowseResultMask::All as u32,
    };
    let mut res = session
        .browse(&[desc], 0, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(r) = res.pop() {
        if r.status_code.is_bad() {
            return Err(format!(
                "browsing {node}: {}",
                crate::convert::status_name(r.status_code)
            ));
        }
        out.extend(r.references.unwrap_or_default());
        if r.continuation_point.is_null_or_empty() {
            break;
        }
        res = session
            .browse_next(false, &[r.continuation_point])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Every variable under `start`, `depth` levels down (the server's own
/// namespace-0 objects are skipped unless browsing starts inside them).
pub async fn browse(session: &Session, start: &NodeId, depth: u32) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    let mut level: Vec<(NodeId, Vec<String>)> = vec![(start.clone(), Vec::new())];
    let objects: NodeId = ObjectId::ObjectsFolder.into();
    let skip_ns0 = start.namespace != 0 || *start == objects;
    for _ in 0..depth.max(1) {
        let mut next = Vec::new();
        for (node, path) in &level {
            for r in children(session, node).await? {
                let id = r.node_id.node_id.clone();
                if skip_ns0 && id.namespace == 0 {
                    continue;
                }
                let mut p = path.clone();
                p.push(r.browse_name.name.as_ref().to_string());
                if r.node_class == NodeClass::Variable {
                    found.push(Found {
                        path: p.clone(),
                        node: id.clone(),
                        data_type: None,
                        value_rank: None,
                    });
                }
                next.push((id, p));
            }
        }
        level = next;
        if level.is_empty() {
            break;
        }
    }
    describe(session, &mut found).await;
    Ok(found)
}

/// Reads each variable's DataType and ValueRank.
async fn describe(session: &Session, found: &mut [Found]) {
    for chunk in found.chunks_mut(500) {
        let ids: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|f| {
                [AttributeId::DataType, AttributeId::ValueRank]
                    .map(|a| ReadValueId::new(f.node.clone(), a))
            })
            .collect();
        let Ok(vals) = session.read(&ids, TimestampsToReturn::Neither, 0.0).await else {
            continue;
        };
        for (f, pair) in chunk.iter_mut().zip(vals.chunks(2)) {
            f.data_type = match pair.first().and_then(|d| d.value.as_ref()) {
                Some(Variant::NodeId(n)) => Some((**n).clone()),
                _ => None,
            };
            f.value_rank = match pair.get(1).and_then(|d| d.value.as_ref()) {
                Some(Variant::Int32(r)) => Some(*r),
                _ => None,
            };
        }
    }
}

/// Built-in data types by NodeId (namespace 0): name and whether a tag reads it
/// as text.
fn builtin(dt: &NodeId) -> Option<(&'static str, bool)> {
    if dt.namespace != 0 {
        return None;
    }
    let opcua::types::Identifier::Numeric(n) = dt.identifier else {
        return None;
    };
    Some(match n {
        1 => ("Boolean", false),
        2 => ("SByte", false),
        3 => ("Byte", false),
        4 => ("Int16", false),
        5 => ("UInt16", false),
        6 => ("Int32", false),
        7 => ("UInt32", false),
        8 => ("Int64", false),
        9 => ("UInt64", false),
        10 => ("Float", false),
        11 => ("Double", false),
        12 => ("String", true),
        13 => ("DateTime", false),
        14 => ("Guid", true),
        15 => ("ByteString", true),
        17 => ("NodeId", true),
        19 => ("StatusCode", false),
        21 => ("LocalizedText", true),
        26 => ("Number", false),
        27 => ("Integer", false),
        28 => ("UInteger", false),
        29 => ("Enumeration", false),
        _ => return None,
    })
}

/// A signal name from a browse path: lower case, `.` between levels, anything
/// but letters, digits, `_` and `-` as `_`.
pub fn signal_name(prefix: &str, path: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix.to_string());
    }
    for p in path {
        let s: String = p
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        parts.push(s);
    }
    parts.join(".")
}

/// The `[[drivers.tags]]` entries of what was found, ready to paste.
pub fn render_tags(prefix: &str, found: &[Found]) -> String {
    let mut out = String::new();
    for f in found {
        let ty = f.data_type.as_ref().and_then(builtin);
        let comment = f.path.join("/");
        let Some((type_name, text)) = ty else {
            let dt = f
                .data_type
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or("unknown".into());
            out.push_str(&format!(
                "# {comment} ({}): data type {dt} is not a built-in scalar type; skipped\n\n",
                f.node
            ));
            continue;
        };
        let rank = f.value_rank.unwrap_or(-1);
        out.push_str(&format!("# {comment}: {type_name}"));
        if rank >= 1 {
            out.push_str(" array (take elements with `index` and `elements`)");
        }
        out.push('\n');
        out.push_str("[[drivers.tags]]\n");
        out.push_str(&format!("name = \"{}\"\n", signal_name(prefix, &f.path)));
        out.push_str(&format!(
            "node = \"{}\"\n",
            toml_escape(&f.node.to_string())
        ));
        if text {
            out.push_str("type = \"text\"\n");
        }
        if rank >= 1 {
            out.push_str("index = 0\nelements = 1\n");
        }
        out.push('\n');
    }
    out
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browse_paths_become_signal_names() {
        let p = vec!["Line 1".to_string(), "Temp(°C)".to_string()];
        assert_eq!(signal_name("plc", &p), "plc.line_1.temp__c_");
        assert_eq!(signal_name("", &p[..1]), "line_1");
    }

    #[test]
    fn found_variables_render_as_tags_ready_to_paste() {
        let found = vec![
            Found {
                path: vec!["Line1".into(), "Temp".into()],
                node: NodeId::new(2, "Line1.Temp"),
                data_type: Some(NodeId::new(0, 11u32)),
                value_rank: Some(-1),
            },
            Found {
                path: vec!["Line1".into(), "Name".into()],
                node: NodeId::new(2, 7u32),
                data_type: Some(NodeId::new(0, 12u32)),
                value_rank: Some(-1),
            },
            Found {
                path: vec!["Line1".into(), "Cfg".into()],
                node: NodeId::new(2, 8u32),
                data_type: Some(NodeId::new(3, 3001u32)),
                value_rank: Some(-1),
            },
        ];
        let s = render_tags("plc", &found);
        assert!(
            s.contains("name = \"plc.line1.temp\"\nnode = \"ns=2;s=Line1.Temp\"\n"),
            "{s}"
        );
        assert!(s.contains("node = \"ns=2;i=7\"\ntype = \"text\"\n"), "{s}");
        assert!(s.contains("not a built-in scalar type; skipped"), "{s}");
    }

    #[test]
    fn a_browse_path_starts_at_the_objects_folder() {
        let p = browse_path("2:Line1/Temp");
        assert_eq!(p.starting_node, NodeId::from(ObjectId::ObjectsFolder));
        let els = p.relative_path.elements.expect("elements");
        assert_eq!(els[0].target_name, QualifiedName::new(2, "Line1"));
        assert_eq!(els[1].target_name, QualifiedName::new(0, "Temp"));
    }
}
