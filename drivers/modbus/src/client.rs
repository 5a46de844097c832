//! The link to the device: the byte stream (TCP, serial, or a test's pipe) in
//! tokio-modbus framing, and one read request on it.

use tokio_modbus::client::Client as _;
use tokio_modbus::prelude::SlaveContext;

use edge_driver_api::BoxFuture;

use crate::config::{Parity, Transport};
use crate::driver::Shared;
use crate::plan::{Area, Request};

/// Opens the byte stream to the device (tests put a fault-injecting pipe here).
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>>;
}

/// A byte stream tokio-modbus runs on.
pub trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug + 'static
{
}
impl<T> Stream for T where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug + 'static
{
}

/// What a read returned.
pub(crate) enum Outcome {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
}

/// One read. Through `call` rather than tokio-modbus's typed readers: those
/// `debug_assert` that the reply holds as many values as asked, so a device
/// answering short panicked the driver in debug builds (found by the
/// `tcp_reply` fuzz target). A short reply reaches the decoder, which reports
/// the tags it cannot fill as bad (`Decode`).
pub(crate) async fn read(
    client: &mut tokio_modbus::client::Context,
    r: &Request,
) -> Result<Result<Outcome, u8>, tokio_modbus::Error> {
    use tokio_modbus::{Request as Ask, Response as Got};
    client.set_slave(tokio_modbus::Slave(r.unit));
    let ask = match r.area {
        Area::Coil => Ask::ReadCoils(r.start, r.count),
        Area::DiscreteInput => Ask::ReadDiscreteInputs(r.start, r.count),
        Area::InputRegister => Ask::ReadInputRegisters(r.start, r.count),
        Area::HoldingRegister => Ask::ReadHoldingRegisters(r.start, r.count),
    };
    let count = usize::from(r.count);
    let res = client.call(ask).await?.map(|got| match got {
        Got::ReadCoils(mut bits) | Got::ReadDiscreteInputs(mut bits) => {
            // Bits come in whole bytes: the padding past `count` is not data.
            bits.truncate(count);
            Outcome::Bits(bits)
        }
        Got::ReadInputRegisters(words) | Got::ReadHoldingRegisters(words) => {
            Outcome::Registers(words)
        }
        // `call` rejects a reply of another function; nothing to decode if not.
        _ => Outcome::Registers(Vec::new()),
    });
    Ok(res.map_err(u8::from))
}

/// What one write puts on the wire: a coil, or registers already in the tag's
/// word order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    Coil(bool),
    Registers(Vec<u16>),
}

/// One write: FC5 (a coil) or FC6 (a register), or FC15/FC16 when `multiple`
/// (or when the value spans several registers). `Err(code)`: the device's
/// exception.
pub(crate) async fn write(
    client: &mut tokio_modbus::client::Context,
    unit: u8,
    address: u16,
    payload: &Payload,
    multiple: bool,
) -> Result<Result<(), u8>, tokio_modbus::Error> {
    use std::borrow::Cow;
    use tokio_modbus::Request as Ask;
    client.set_slave(tokio_modbus::Slave(unit));
    let ask = match payload {
        Payload::Coil(b) if multiple => Ask::WriteMultipleCoils(address, Cow::Owned(vec![*b])),
        Payload::Coil(b) => Ask::WriteSingleCoil(address, *b),
        Payload::Registers(w) if w.len() == 1 && !multiple => {
            Ask::WriteSingleRegister(address, w[0])
        }
        Payload::Registers(w) => Ask::WriteMultipleRegisters(address, Cow::Borrowed(w)),
    };
    Ok(client.call(ask).await?.map(|_| ()).map_err(u8::from))
}

/// Opens the link and wraps it in tokio-modbus framing.
pub(crate) async fn open(sh: &Shared) -> std::io::Result<tokio_modbus::client::Context> {
    use tokio_modbus::client::{rtu, tcp};
    let slave = tokio_modbus::Slave(0);
    if let Some(c) = &sh.connector {
        let stream = c.connect().await?;
        return Ok(match sh.transport {
            Transport::Tcp { .. } => tcp::attach_slave(stream, slave),
            _ => rtu::attach_slave(stream, slave),
        });
    }
    match &sh.transport {
        Transport::Tcp { .. } => {
            let addr = sh.addr.ok_or_else(|| std::io::Error::other("no address"))?;
            tcp::connect_slave(addr, slave).await
        }
        Transport::RtuOverTcp { .. } => {
            let addr = sh.addr.ok_or_else(|| std::io::Error::other("no address"))?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(rtu::attach_slave(stream, slave))
        }
        Transport::Rtu(s) => {
            use tokio_serial::SerialPortBuilderExt;
            let port = tokio_serial::new(&s.device, s.baud)
                .parity(match s.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(if s.data_bits == 7 {
                    tokio_serial::DataBits::Seven
                } else {
                    tokio_serial::DataBits::Eight
                })
                .stop_bits(if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(std::io::Error::other)?;
            Ok(rtu::attach_slave(port, slave))
        }
    }
}
