//! Finding and loading ONNX Runtime (the `ort` crate with `load-dynamic`: nothing is linked or
//! downloaded at build time).
//!
//! Search order: `--ort-lib`, `ORT_DYLIB_PATH`, a pip-installed `onnxruntime` or
//! `onnxruntime-gpu` (asked of `python3`), then the project's own copy in `.ort/` (written by
//! `scripts/fetch-ort.sh`), looked for in the current directory and above the executable.

use crate::error::InferError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where a library was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Pip,
    Project,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Flag => "`ort_lib`",
            Source::Env => "ORT_DYLIB_PATH",
            Source::Pip => "pip-installed onnxruntime",
            Source::Project => "project copy (.ort/)",
        })
    }
}

/// A located ONNX Runtime library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub source: Source,
}

/// `site-packages/onnxruntime` of the `python3` on PATH, if it has one.
pub fn pip_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, os; s = u.find_spec('onnxruntime'); print(os.path.dirname(s.origin) if s and s.origin else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

fn lib_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the versioned file (libonnxruntime.so.1.31.1) over a bare symlink.
    libs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    libs.into_iter().next()
}

/// Directories that may hold the project's `.ort/`.
fn project_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(".ort")];
    if let Ok(exe) = std::env::current_exe() {
        v.extend(exe.ancestors().skip(1).map(|a| a.join(".ort")));
    }
    v
}

/// Finds the library, trying every place in order; the error lists them all.
pub fn locate(flag: Option<&Path>) -> Result<Located, InferError> {
    let mut tried = Vec::new();
    if let Some(p) = flag {
        if p.is_file() {
            return Ok(Located {
                path: p.to_path_buf(),
                source: Source::Flag,
            });
        }
        // An explicit flag that points nowhere is an error, not a reason to look elsewhere.
        return Err(InferError::RuntimeLoad {
            path: p.to_path_buf(),
            reason: "`ort_lib` names no file".into(),
        });
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(Located {
                path: p,
                source: Source::Env,
            });
        }
        tried.push(format!("ORT_DYLIB_PATH={} (no such file)", p.display()));
    } else {
        tried.push("ORT_DYLIB_PATH (unset)".into());
    }
    match pip_package_dir() {
        Some(dir) => match lib_in(&dir.join("capi")) {
            Some(path) => {
                return Ok(Located {
                    path,
                    source: Source::Pip,
                });
            }
            None => tried.push(format!(
                "{} (no libonnxruntime.so)",
                dir.join("capi").display()
            )),
        },
        None => tried.push("python3 -c 'import onnxruntime' (not installed)".into()),
    }
    for dir in project_dirs() {
        if let Some(path) = lib_in(&dir) {
            return Ok(Located {
                path,
                source: Source::Project,
            });
        }
    }
    tried.push(".ort/ (here and above the executable)".into());
    Err(InferError::RuntimeNotFound {
        tried: tried.join("; "),
    })
}

static ENV: OnceLock<Result<(Located, ort::environment::Environment), String>> = OnceLock::new();

/// Loads ONNX Runtime once per process (later calls return the first result, whatever their
/// `flag`: the library cannot be swapped once loaded).
pub fn environment(
    flag: Option<&Path>,
) -> Result<&'static (Located, ort::environment::Environment), InferError> {
    let r = ENV.get_or_init(|| {
        let loc = locate(flag).map_err(|e| e.to_string())?;
        let env = ort::init_from(&loc.path)
            .map_err(|e| format!("{}: cannot load ONNX Runtime: {e}", loc.path.display()))?
            .with_name("distill")
            .build()
            .map_err(|e| {
                format!(
                    "{}: cannot create an ONNX Runtime environment: {e}",
                    loc.path.display()
                )
            })?;
        Ok((loc, env))
    });
    r.as_ref().map_err(|reason| InferError::RuntimeLoad {
        path: PathBuf::from("onnxruntime"),
        reason: reason.clone(),
    })
}

/// `lib` folders of the pip `nvidia-*` packages holding the CUDA 13 and cuDNN 9 libraries
/// (`nvidia/cu13/lib`, `nvidia/cudnn/lib`), as onnxruntime's Python `preload_dlls` finds them.
pub fn cuda_library_dirs() -> (Option<PathBuf>, Option<PathBuf>) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('nvidia'); print('\\n'.join(s.submodule_search_locations) if s else '')",
        ])
        .output();
    let roots: Vec<PathBuf> = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().map(PathBuf::from).collect())
        .unwrap_or_default();
    let find = |sub: &str| {
        roots
            .iter()
            .map(|r| r.join(sub).join("lib"))
            .find(|p| p.is_dir())
    };
    (find("cu13"), find("cudnn"))
}

/// Loads the CUDA and cuDNN libraries from the pip packages before the CUDA EP registers, so
/// it finds them without `LD_LIBRARY_PATH`. Errors say which library is missing.
pub fn preload_cuda() -> Result<(), String> {
    let (cuda, cudnn) = cuda_library_dirs();
    if cuda.is_none() && cudnn.is_none() {
        return Err(
            "no pip CUDA 13 / cuDNN 9 libraries (python3 -c 'import nvidia' finds none); relying on LD_LIBRARY_PATH".into(),
        );
    }
    ort::ep::cuda::preload_dylibs(cuda.as_deref(), cudnn.as_deref()).map_err(|e| e.to_string())
}

/// One line of `distill doctor`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub item: String,
    pub ok: bool,
    pub detail: String,
    /// The command that fixes a failed check.
    pub fix: Option<String>,
}

/// What `distill doctor` reports: the library, the environment, and each execution provider.
pub fn doctor(flag: Option<&Path>) -> Vec<Check> {
    use ort::ep::ExecutionProvider;
    let mut v = Vec::new();
    let fix_lib = "scripts/fetch-ort.sh (or: pip install onnxruntime==1.31.1, or set `ort_lib`)";
    match locate(flag) {
        Ok(loc) => v.push(Check {
            item: "ONNX Runtime library".into(),
            ok: true,
            detail: format!("{} (from {})", loc.path.display(), loc.source),
            fix: None,
        }),
        Err(e) => {
            v.push(Check {
                item: "ONNX Runtime library".into(),
                ok: false,
                detail: e.to_string(),
                fix: Some(fix_lib.into()),
            });
            return v;
        }
    }
    match environment(flag) {
        Ok(_) => v.push(Check {
            item: "ONNX Runtime loads".into(),
            ok: true,
            detail: "environment created".into(),
            fix: None,
        }),
        Err(e) => {
            v.push(Check {
                item: "ONNX Runtime loads".into(),
                ok: false,
                detail: e.to_string(),
                fix: Some(fix_lib.into()),
            });
            return v;
        }
    }
    let ep = |name: &str, r: ort::Result<bool>, fix: &str| Check {
        item: format!("{name} execution provider"),
        ok: matches!(r, Ok(true)),
        fix: (!matches!(r, Ok(true))).then(|| fix.to_string()),
        detail: match r {
            Ok(true) => "available".into(),
            Ok(false) => "not in this ONNX Runtime build".into(),
            Err(e) => e.to_string(),
        },
    };
    v.push(ep("CPU", ort::ep::CPU::is_available(), fix_lib));
    let cuda = ort::ep::CUDA::is_available();
    let cuda_ok = matches!(cuda, Ok(true));
    v.push(ep(
        "CUDA",
        cuda,
        "pip install onnxruntime-gpu==1.31.1 (CUDA 13, cuDNN 9), or point `ort_lib` at its libonnxruntime.so",
    ));
    if cuda_ok {
        let r = preload_cuda();
        v.push(Check {
            item: "CUDA 13 / cuDNN 9 libraries".into(),
            ok: r.is_ok(),
            detail: match &r {
                Ok(()) => {
                    let (a, b) = cuda_library_dirs();
                    format!(
                        "preloaded from {} and {}",
                        a.map_or("-".into(), |p| p.display().to_string()),
                        b.map_or("-".into(), |p| p.display().to_string())
                    )
                }
                Err(e) => e.clone(),
            },
            fix: r.is_err().then(|| {
                "pip install nvidia-cuda-runtime nvidia-cublas nvidia-cufft nvidia-curand nvidia-cuda-nvrtc nvidia-cudnn-cu13".into()
            }),
        });
    }
    v
}
