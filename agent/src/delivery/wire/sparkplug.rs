//! Sparkplug B (Eclipse Sparkplug 3.0): topics and protobuf payloads.
//!
//! Only what an edge node sends and reads is modelled: the payload's timestamp,
//! metrics and `seq`; a metric's name, alias, timestamp, datatype, the historical
//! and null flags, its properties (engineering units and limits) and its scalar
//! value. Field numbers are `sparkplug_b.proto`'s, so any Sparkplug host decodes
//! these messages and a decoder skips what it does not know.
//!
//! Integer values follow the specification: Int8/16/32 and UInt8/16/32 travel in
//! `int_value` (the signed ones as two's complement), Int64/UInt64 in `long_value`.

use prost::Message;

/// The Sparkplug B topic namespace.
pub const NAMESPACE: &str = "spBv1.0";

/// The node control metric a host sets to ask for a new NBIRTH and DBIRTHs.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// The birth/death sequence metric of NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";

/// Sparkplug message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }
}

/// `spBv1.0/{group}/{type}/{node}[/{device}]`.
pub fn topic(group: &str, kind: MessageType, node: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("{NAMESPACE}/{group}/{}/{node}/{d}", kind.as_str()),
        None => format!("{NAMESPACE}/{group}/{}/{node}", kind.as_str()),
    }
}

/// Whether `id` may be a group, edge node or device id: not empty, and none of
/// the MQTT topic's special characters `/ + #`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#'])
}

/// Sparkplug datatypes (the subset the agent's values map to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    Int32 = 3,
    Int64 = 4,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
}

/// A Sparkplug payload.
#[derive(Clone, PartialEq, Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch at sending.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0–255, wrapping; absent in NDEATH.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

/// One metric of a payload.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch the value was read.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15")]
    pub value: Option<MetricValue>,
}

/// A metric's value.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    #[prost(uint32, tag = "10")]
    Int(u32),
    #[prost(uint64, tag = "11")]
    Long(u64),
    #[prost(float, tag = "12")]
    Float(f32),
    #[prost(double, tag = "13")]
    Double(f64),
    #[prost(bool, tag = "14")]
    Boolean(bool),
    #[prost(string, tag = "15")]
    String(String),
}

/// Named properties of a metric (`engUnit`, `engLow`, `engHigh`, `Quality`, ...).
#[derive(Clone, PartialEq, Message)]
pub struct PropertySet {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// One property's value.
#[derive(Clone, PartialEq, Message)]
pub struct PropertyValue {
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    #[prost(oneof = "PropertyValueKind", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyValueKind>,
}

/// A property's value (field numbers of `PropertyValue`, not of `Metric`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyValueKind {
    #[prost(uint32, tag = "3")]
    Int(u32),
    #[prost(uint64, tag = "4")]
    Long(u64),
    #[prost(float, tag = "5")]
    Float(f32),
    #[prost(double, tag = "6")]
    Double(f64),
    #[prost(bool, tag = "7")]
    Boolean(bool),
    #[prost(string, tag = "8")]
    String(String),
}

impl PropertySet {
    /// Adds a string property.
    pub fn string(&mut self, key: &str, v: &str) {
        self.push(
            key,
            DataType::String,
            PropertyValueKind::String(v.to_string()),
        );
    }

    /// Adds an Int32 property.
    pub fn int(&mut self, key: &str, v: i32) {
        self.push(key, DataType::Int32, PropertyValueKind::Int(v as u32));
    }

    /// Adds a Double property.
    pub fn double(&mut self, key: &str, v: f64) {
        self.push(key, DataType::Double, PropertyValueKind::Double(v));
    }

    fn push(&mut self, key: &str, t: DataType, v: PropertyValueKind) {
        self.keys.push(key.to_string());
        self.values.push(PropertyValue {
            r#type: Some(t as u32),
            is_null: None,
            value: Some(v),
        });
    }
}

/// A value as Sparkplug carries it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
}

impl Scalar {
    pub fn datatype(&self) -> DataType {
        match self {
            Scalar::I64(_) => DataType::Int64,
            Scalar::F64(_) => DataType::Double,
            Scalar::Bool(_) => DataType::Boolean,
            Scalar::Text(_) => DataType::String,
        }
    }

    fn value(&self) -> MetricValue {
        match self {
            // Two's complement in long_value, as the specification says.
            Scalar::I64(v) => MetricValue::Long(*v as u64),
            Scalar::F64(v) => MetricValue::Double(*v),
            Scalar::Bool(v) => MetricValue::Boolean(*v),
            Scalar::Text(v) => MetricValue::String(v.clone()),
        }
    }
}

impl Metric {
    /// A metric with its name and datatype (births), its value or null when `None`.
    pub fn named(name: &str, alias: Option<u64>, t: DataType, v: Option<&Scalar>) -> Metric {
        Metric {
            name: Some(name.to_string()),
            alias,
            datatype: Some(t as u32),
            ..Metric::valued(v)
        }
    }

    /// A metric by alias only (data messages after a birth).
    pub fn aliased(alias: u64, v: Option<&Scalar>) -> Metric {
        Metric {
            alias: Some(alias),
            ..Metric::valued(v)
        }
    }

    fn valued(v: Option<&Scalar>) -> Metric {
        Metric {
            name: None,
            alias: None,
            timestamp: None,
            datatype: None,
            is_historical: None,
            is_null: v.is_none().then_some(true),
            properties: None,
            value: v.map(Scalar::value),
        }
    }

    /// The value as a number (a command's value for a tag): integers by their
    /// declared datatype (Int8–Int64 signed, two's complement as the spec
    /// stores them), booleans as 0/1; `None` for text and null.
    pub fn as_number(&self) -> Option<f64> {
        let dt = self.datatype.unwrap_or(0);
        match self.value.as_ref()? {
            MetricValue::Int(v) => Some(match dt {
                1 => f64::from(*v as u8 as i8),
                2 => f64::from(*v as u16 as i16),
                3 => f64::from(*v as i32),
                _ => f64::from(*v),
            }),
            MetricValue::Long(v) if dt == 8 => Some(*v as f64),
            MetricValue::Long(v) => Some(*v as i64 as f64),
            MetricValue::Float(v) => Some(f64::from(*v)),
            MetricValue::Double(v) => Some(*v),
            MetricValue::Boolean(b) => Some(f64::from(u8::from(*b))),
            MetricValue::String(_) => None,
        }
    }

    /// The value as a boolean (`Node Control/Rebirth` and other commands).
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Some(MetricValue::Boolean(b)) => Some(b),
            _ => None,
        }
    }
}

impl Payload {
    /// The payload's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes a payload; `None` for bytes that are not one.
    pub fn decode_bytes(b: &[u8]) -> Option<Payload> {
        Payload::decode(b).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_namespace() {
        assert_eq!(
            topic("plant1", MessageType::NBirth, "gw-7", None),
            "spBv1.0/plant1/NBIRTH/gw-7"
        );
        assert_eq!(
            topic("plant1", MessageType::DData, "gw-7", Some("modbus-1")),
            "spBv1.0/plant1/DDATA/gw-7/modbus-1"
        );
        assert!(valid_id("gw-7") && !valid_id("a/b") && !valid_id("") && !valid_id("x#"));
    }

    #[test]
    fn a_payload_round_trips_and_negative_integers_are_twos_complement() {
        let mut props = PropertySet::default();
        props.string("engUnit", "degC");
        let mut m = Metric::named(
            "pump1.temperature",
            Some(3),
            DataType::Double,
            Some(&Scalar::F64(71.5)),
        );
        m.properties = Some(props);
        let p = Payload {
            timestamp: Some(1_700_000_000_000),
            metrics: vec![
                m,
                Metric::aliased(4, Some(&Scalar::I64(-2))),
                Metric::aliased(5, None),
            ],
            seq: Some(255),
        };
        let bytes = p.to_bytes();
        let back = Payload::decode_bytes(&bytes).expect("decodes");
        assert_eq!(back, p);
        assert_eq!(back.metrics[1].value, Some(MetricValue::Long(u64::MAX - 1)));
        assert_eq!(back.metrics[2].is_null, Some(true));
        assert!(
            Payload::decode_bytes(&[0xff, 0xff, 0xff]).is_none(),
            "garbage"
        );
    }
}
