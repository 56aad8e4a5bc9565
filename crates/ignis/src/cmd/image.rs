//! `ignis image`: build, list and remove the guest images of the VM backends (qemu, and the
//! ELF kernel firecracker boots).

use anyhow::Context;
use ignis_vm::image::{self, ImageRecipe};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build (or find in the cache) the guest image and print where it is.
    Build(BuildArgs),
    /// List cached images.
    Ls,
    /// Remove cached images by key (a unique prefix is enough), or all with --all.
    Rm {
        keys: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove all but the newest images (every agent rebuild makes a new ~260 MB image);
    /// images a qemu snapshot or live VM still builds on are kept.
    Prune {
        /// How many of the newest images to keep.
        #[arg(long, default_value_t = 2)]
        keep: usize,
    },
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Profile to build for (its name is recorded; every profile uses the same recipe today).
    #[arg(long)]
    pub profile: Option<String>,
    /// Extra host programs to copy into the image with their shared libraries.
    #[arg(long = "with")]
    pub with: Vec<String>,
    /// Debian packages for the ext4 root disk (repeatable or comma separated; replaces the
    /// default list, or IGNIS_IMAGE_PACKAGES). `none` builds an initramfs-only image.
    #[arg(long = "package", value_name = "PKG")]
    pub packages: Vec<String>,
    /// The agent binary to put in the image (default: the one next to ignis).
    #[arg(long, env = "IGNIS_AGENT_BIN")]
    pub agent: Option<PathBuf>,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let cache = image::cache_dir();
    match cmd {
        ImageCommand::Build(args) => {
            let mut recipe = ImageRecipe::default_for_host().or_else(|e| match &args.agent {
                Some(_) => Ok(ImageRecipe {
                    cache_dir: cache.clone(),
                    agent: PathBuf::new(),
                    kernel_meta: image::DEFAULT_KERNEL_META.into(),
                    programs: image::DEFAULT_PROGRAMS
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                    packages: image::packages_from_env(),
                }),
                None => Err(e),
            })?;
            if let Some(a) = args.agent {
                recipe.agent = a;
            }
            recipe.programs.extend(args.with);
            if !args.packages.is_empty() {
                recipe.packages = image::parse_package_list(&args.packages.join(","));
            }
            if let Some(p) = &args.profile {
                tracing::info!(profile = %p, "building the image for profile {p}");
            }
            let started = std::time::Instant::now();
            let img = image::build(&recipe).context("building the guest image")?;
            let took = started.elapsed();
            if args.json {
                // the manifest's fields, plus where the files are and what the disk holds
                let mut v = serde_json::to_value(&img.manifest)?;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("dir".into(), serde_json::json!(img.dir));
                    obj.insert("size_bytes".into(), serde_json::json!(img.size()));
                    obj.insert(
                        "root_disk".into(),
                        match (img.root_disk(), img.root_disk_manifest()) {
                            (Some(path), Some(m)) => serde_json::json!({
                                "path": path,
                                "boot_initrd": img.boot_initrd(),
                                "packages": m.packages,
                                "debs": m.debs,
                                "size_bytes": m.size_bytes,
                            }),
                            _ => serde_json::Value::Null,
                        },
                    );
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("image {}", img.manifest.key);
                println!("  dir      {}", img.dir.display());
                println!(
                    "  kernel   {} {} ({})",
                    img.manifest.kernel_package,
                    img.manifest.kernel_version,
                    img.manifest.kernel_release
                );
                println!("  vmlinuz  {}", img.vmlinuz().display());
                match img.vmlinux() {
                    Some(v) => println!("  vmlinux  {}", v.display()),
                    None => println!("  vmlinux  (not extracted)"),
                }
                println!("  initrd   {}", img.initrd().display());
                println!(
                    "  programs busybox, ignis-agent, {}",
                    img.manifest.programs.join(", ")
                );
                match (img.root_disk(), img.root_disk_manifest()) {
                    (Some(disk), Some(m)) => {
                        println!(
                            "  disk     {} (ext4, {} GiB, {} package files: {})",
                            disk.display(),
                            m.size_bytes >> 30,
                            m.debs.len(),
                            m.packages.join(", ")
                        );
                        println!("  boot     {}", img.boot_initrd().display());
                    }
                    _ => println!("  disk     none (the initramfs is the root)"),
                }
                println!(
                    "  size     {:.1} MiB on disk, {:.1?} to build or find",
                    img.size() as f64 / (1024.0 * 1024.0),
                    took
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls => {
            let images = image::list(&cache)?;
            if images.is_empty() {
                println!("no images in {}", cache.join("images").display());
            }
            for img in images {
                let disk = match img.root_disk_manifest() {
                    Some(m) if img.root_disk().is_some() => {
                        format!("disk: {}", m.packages.join(","))
                    }
                    _ => "initramfs only".to_owned(),
                };
                println!(
                    "{}  {}  {:>6.1} MiB  agent {}  {}  {}",
                    img.manifest.key,
                    img.manifest.kernel_release,
                    img.size() as f64 / (1024.0 * 1024.0),
                    img.manifest.agent_sha256.get(..12).unwrap_or(""),
                    img.manifest.programs.join(","),
                    disk
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Rm { keys, all } => {
            let targets = if all {
                image::list(&cache)?
            } else {
                if keys.is_empty() {
                    anyhow::bail!("name the images to remove (see `ignis image ls`) or pass --all");
                }
                keys.iter()
                    .map(|k| image::find(&cache, k))
                    .collect::<Result<Vec<_>, _>>()?
            };
            for img in targets {
                image::remove(&img)?;
                println!("removed {}", img.manifest.key);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Prune { keep } => {
            // `list` is newest first
            for img in image::list(&cache)?.into_iter().skip(keep) {
                match image::remove(&img) {
                    Ok(()) => println!("removed {}", img.manifest.key),
                    Err(e @ image::ImageError::InUse { .. }) => {
                        println!("kept {}: {e}", img.manifest.key)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
