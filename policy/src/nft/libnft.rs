//! libnftables, in-process: the library `nft` itself is built on, loaded at
//! run time with `dlopen("libnftables.so.1")` (Debian's `libnftables1`,
//! installed with `nftables`), so building needs no headers and no
//! link-time library. Commands are the `nft` language; one call is one
//! netlink batch, which the kernel applies atomically (ADR 0004).
//!
//! A context is bound to the network namespace of the thread that opens its
//! netlink socket, and is not thread-safe; [`Nft`] therefore owns a worker
//! thread that enters the requested namespace, creates the context and runs
//! every command, and callers talk to it over a channel.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use crate::nft::netlink::{ElementOp, NetlinkSocket};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot load libnftables.so.1 (install Debian's libnftables1 / nftables): {0}")]
    Load(String),
    #[error("cannot enter network namespace {path}: {message}")]
    Netns { path: PathBuf, message: String },
    #[error("nft_ctx_new failed")]
    Context,
    #[error("the nftables worker thread is gone")]
    Worker,
    #[error("command contains a NUL byte")]
    Nul,
    #[error("nftables refused the batch: {message}")]
    Command { message: String },
}

const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;
const NFT_CTX_OUTPUT_NUMERIC_PROTO: c_uint = 1 << 7;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGet = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type CtxSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

struct Lib {
    _handle: *mut c_void,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxGet,
    get_error: CtxGet,
    set_output_flags: CtxSetFlags,
    run_cmd: RunCmd,
}

impl Lib {
    fn load() -> Result<Lib, NftError> {
        let name = c"libnftables.so.1";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is
        // kept for the process lifetime of the worker (never dlclosed).
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(NftError::Load(dl_error()));
        }
        let sym = |n: &CStr| -> Result<*mut c_void, NftError> {
            // SAFETY: handle is a live dlopen handle, n is NUL-terminated.
            let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
            if p.is_null() {
                Err(NftError::Load(format!("missing symbol {n:?}")))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is a function of libnftables' public API
        // (nftables/libnftables.h) with exactly the signature transmuted to.
        unsafe {
            Ok(Lib {
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_output",
                )?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_error",
                )?),
                get_output: std::mem::transmute::<*mut c_void, CtxGet>(sym(
                    c"nft_ctx_get_output_buffer",
                )?),
                get_error: std::mem::transmute::<*mut c_void, CtxGet>(sym(
                    c"nft_ctx_get_error_buffer",
                )?),
                set_output_flags: std::mem::transmute::<*mut c_void, CtxSetFlags>(sym(
                    c"nft_ctx_output_set_flags",
                )?),
                run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym(
                    c"nft_run_cmd_from_buffer",
                )?),
                _handle: handle,
            })
        }
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated thread-local string.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated per dlerror's contract.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// One libnftables context, used from one thread only.
struct Ctx {
    lib: Lib,
    ctx: *mut c_void,
}

impl Ctx {
    fn new() -> Result<Ctx, NftError> {
        let lib = Lib::load()?;
        // SAFETY: 0 = NFT_CTX_DEFAULT.
        let ctx = unsafe { (lib.ctx_new)(0) };
        if ctx.is_null() {
            return Err(NftError::Context);
        }
        // SAFETY: ctx is a live context.
        unsafe {
            (lib.buffer_output)(ctx);
            (lib.buffer_error)(ctx);
        }
        Ok(Ctx { lib, ctx })
    }

    fn run(&mut self, cmd: &str, json: bool) -> Result<String, NftError> {
        let c = CString::new(cmd).map_err(|_| NftError::Nul)?;
        let flags = if json {
            NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_NUMERIC_PROTO
        } else {
            0
        };
        // SAFETY: ctx is live and used from this thread only; c is
        // NUL-terminated; the buffers returned are owned by ctx and copied
        // before the next call.
        unsafe {
            (self.lib.set_output_flags)(self.ctx, flags);
            let rc = (self.lib.run_cmd)(self.ctx, c.as_ptr());
            let out = cstr((self.lib.get_output)(self.ctx));
            let err = cstr((self.lib.get_error)(self.ctx));
            if rc != 0 {
                return Err(NftError::Command {
                    message: err.trim_end().to_string(),
                });
            }
            Ok(out)
        }
    }
}

/// # Safety
/// `p` is null or a valid NUL-terminated string.
unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: ctx was created by nft_ctx_new and is freed once.
        unsafe { (self.lib.ctx_free)(self.ctx) }
    }
}

enum Job {
    /// nft-language commands; JSON output or not.
    Commands(String, bool, mpsc::Sender<Result<String, NftError>>),
    /// Hash-set element changes as a raw netlink batch.
    Elements(String, Vec<ElementOp>, mpsc::Sender<Result<(), NftError>>),
}

/// A handle on libnftables running in a worker thread (optionally inside a
/// network namespace). Cheap to call: one channel round trip plus the
/// library's own work, no process.
pub struct Nft {
    tx: Option<mpsc::Sender<Job>>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Nft {
    /// libnftables in the caller's network namespace.
    pub fn open() -> Result<Nft, NftError> {
        Nft::start(None)
    }

    /// libnftables inside the network namespace at `path` (e.g.
    /// `/run/netns/NAME`).
    pub fn open_in_netns(path: &Path) -> Result<Nft, NftError> {
        Nft::start(Some(path.to_path_buf()))
    }

    fn start(netns: Option<PathBuf>) -> Result<Nft, NftError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), NftError>>();
        let worker = thread::Builder::new()
            .name("margay-nft".into())
            .spawn(move || {
                let ctx = (|| {
                    if let Some(p) = &netns {
                        enter_netns(p)?;
                    }
                    Ctx::new()
                })();
                let mut ctx = match ctx {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut netlink: Option<NetlinkSocket> = None;
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Commands(cmd, json, reply) => {
                            let _ = reply.send(ctx.run(&cmd, json));
                        }
                        Job::Elements(table, ops, reply) => {
                            let result = (|| {
                                if netlink.is_none() {
                                    netlink = Some(NetlinkSocket::open().map_err(|e| {
                                        NftError::Command {
                                            message: format!("netlink socket: {e}"),
                                        }
                                    })?);
                                }
                                let sock = netlink.as_mut().ok_or(NftError::Worker)?;
                                sock.apply(&table, &ops)
                                    .map_err(|message| NftError::Command { message })
                            })();
                            let _ = reply.send(result);
                        }
                    }
                }
            })
            .map_err(|_| NftError::Worker)?;
        ready_rx.recv().map_err(|_| NftError::Worker)??;
        Ok(Nft {
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    fn call(&self, cmd: &str, json: bool) -> Result<String, NftError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or(NftError::Worker)?
            .send(Job::Commands(cmd.to_string(), json, reply_tx))
            .map_err(|_| NftError::Worker)?;
        reply_rx.recv().map_err(|_| NftError::Worker)?
    }

    /// Add/delete hash-set elements of `inet <table>` in one kernel
    /// transaction over raw netlink, bypassing libnftables (see
    /// `netlink.rs`).
    pub fn apply_elements(&self, table: &str, ops: Vec<ElementOp>) -> Result<(), NftError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or(NftError::Worker)?
            .send(Job::Elements(table.to_string(), ops, reply_tx))
            .map_err(|_| NftError::Worker)?;
        reply_rx.recv().map_err(|_| NftError::Worker)?
    }

    /// Run a batch of commands (one atomic transaction); returns text output.
    pub fn run(&self, cmds: &str) -> Result<String, NftError> {
        self.call(cmds, false)
    }

    /// Run commands with JSON output (for listing).
    pub fn run_json(&self, cmds: &str) -> Result<String, NftError> {
        self.call(cmds, true)
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn enter_netns(path: &Path) -> Result<(), NftError> {
    let f = File::open(path).map_err(|e| NftError::Netns {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NftError::Netns {
            path: path.to_path_buf(),
            message: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}
