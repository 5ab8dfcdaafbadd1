//! Configurations shared by the CLI tests and the explain-versus-build test.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod verdict;

/// A configuration the framework rejects: the object whose creation fails and the status.
pub struct Rejection {
    pub name: &'static str,
    pub toml: &'static str,
    pub object: &'static str,
    pub status: &'static str,
}

const DEV_SPIN: &str = "[[device]]\nname = \"dev0\"\nsync_scope = \"device\"\n";
const DEV_PASSIVE: &str =
    "[[device]]\nname = \"dev0\"\nsync_scope = \"device\"\nexecution_level = \"passive\"\n";
const QUEUE: &str = "[[queue]]\nname = \"rw\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\", \"write\"]\ndefault = true\n";

/// Every rejection rule of spec §1.1, §2.3, §4.2 and §5.1 that wdfkit models.
pub fn rejections() -> Vec<Rejection> {
    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
    vec![
        Rejection {
            name: "device-scope-queue-other-level",
            toml: leak(format!(
                "{DEV_SPIN}[[queue]]\nname = \"rw\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\nexecution_level = \"passive\"\n"
            )),
            object: "queue:rw",
            status: "STATUS_INVALID_PARAMETER",
        },
        Rejection {
            name: "file-object-queue-scope",
            toml: "[[device]]\nname = \"dev0\"\nsync_scope = \"queue\"\nfile_object = { sync_scope = \"inherit\" }\n",
            object: "file_object:dev0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "file-object-explicit-queue-scope",
            toml: "[[device]]\nname = \"dev0\"\nexecution_level = \"passive\"\nfile_object = { sync_scope = \"queue\" }\n",
            object: "file_object:dev0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "file-object-device-scope-dispatch-device",
            toml: "[[device]]\nname = \"dev0\"\nsync_scope = \"device\"\nfile_object = { execution_level = \"inherit\", sync_scope = \"inherit\" }\n",
            object: "file_object:dev0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "work-item-under-spin-scope",
            toml: leak(format!(
                "{DEV_SPIN}{QUEUE}[[work_item]]\nname = \"w0\"\nparent = \"rw\"\n"
            )),
            object: "work_item:w0",
            status: "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL",
        },
        Rejection {
            name: "dpc-under-passive-scope",
            toml: leak(format!(
                "{DEV_PASSIVE}{QUEUE}[[dpc]]\nname = \"d0\"\nparent = \"dev0\"\n"
            )),
            object: "dpc:d0",
            status: "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL",
        },
        Rejection {
            name: "passive-timer-under-spin-scope",
            toml: leak(format!(
                "{DEV_SPIN}[[timer]]\nname = \"t0\"\nparent = \"dev0\"\nexecution_level = \"passive\"\n"
            )),
            object: "timer:t0",
            status: "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL",
        },
        Rejection {
            name: "timer-parented-to-driver",
            toml: "[[timer]]\nname = \"t0\"\nparent = \"driver\"\n",
            object: "timer:t0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "dpc-parented-to-driver",
            toml: "[[dpc]]\nname = \"d0\"\nparent = \"driver\"\nautomatic_serialization = false\n",
            object: "dpc:d0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "work-item-parented-to-driver",
            toml: "[[work_item]]\nname = \"w0\"\nparent = \"driver\"\n",
            object: "work_item:w0",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "periodic-passive-timer",
            toml: leak(format!(
                "{DEV_PASSIVE}[[timer]]\nname = \"t0\"\nparent = \"dev0\"\nexecution_level = \"passive\"\nperiod_ms = 10\n"
            )),
            object: "timer:t0",
            status: "STATUS_NOT_SUPPORTED",
        },
        Rejection {
            name: "scope-on-timer",
            toml: leak(format!(
                "{DEV_SPIN}[[timer]]\nname = \"t0\"\nparent = \"dev0\"\nsync_scope = \"device\"\n"
            )),
            object: "timer:t0",
            status: "STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID",
        },
        Rejection {
            name: "scope-on-dpc",
            toml: leak(format!(
                "{DEV_SPIN}[[dpc]]\nname = \"d0\"\nparent = \"dev0\"\nsync_scope = \"queue\"\n"
            )),
            object: "dpc:d0",
            status: "STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID",
        },
        Rejection {
            name: "level-on-dpc",
            toml: leak(format!(
                "{DEV_SPIN}[[dpc]]\nname = \"d0\"\nparent = \"dev0\"\nexecution_level = \"dispatch\"\n"
            )),
            object: "dpc:d0",
            status: "STATUS_WDF_EXECUTION_LEVEL_INVALID",
        },
        Rejection {
            name: "level-on-work-item",
            toml: leak(format!(
                "{DEV_PASSIVE}[[work_item]]\nname = \"w0\"\nparent = \"dev0\"\nexecution_level = \"passive\"\n"
            )),
            object: "work_item:w0",
            status: "STATUS_WDF_EXECUTION_LEVEL_INVALID",
        },
        Rejection {
            name: "queue-without-handlers",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"q\"\ndevice = \"dev0\"\ndispatch = \"sequential\"\n",
            object: "queue:q",
            status: "STATUS_WDF_NO_CALLBACK",
        },
        Rejection {
            name: "manual-queue-with-handlers",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"q\"\ndevice = \"dev0\"\ndispatch = \"manual\"\nhandlers = [\"read\"]\n",
            object: "queue:q",
            status: "STATUS_INVALID_PARAMETER",
        },
        Rejection {
            name: "parallel-limit-zero",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"q\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nparallel_limit = 0\nhandlers = [\"read\"]\n",
            object: "queue:q",
            status: "STATUS_INVALID_PARAMETER",
        },
        Rejection {
            name: "parallel-limit-on-sequential",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"q\"\ndevice = \"dev0\"\ndispatch = \"sequential\"\nparallel_limit = 2\nhandlers = [\"read\"]\n",
            object: "queue:q",
            status: "STATUS_INVALID_PARAMETER",
        },
        Rejection {
            name: "second-default-queue",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"a\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\ndefault = true\n[[queue]]\nname = \"b\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"write\"]\ndefault = true\n",
            object: "queue:b",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
        Rejection {
            name: "request-type-routed-twice",
            toml: "[[device]]\nname = \"dev0\"\n[[queue]]\nname = \"a\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\n[[queue]]\nname = \"b\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\", \"write\"]\n",
            object: "queue:b",
            status: "STATUS_INVALID_DEVICE_REQUEST",
        },
    ]
}

/// The shipped scenario files.
pub fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// A scratch file under the target's temporary folder.
pub fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wdfkit-tests");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write scratch file");
    p
}
