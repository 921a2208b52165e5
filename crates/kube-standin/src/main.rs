//! `liftoff-kube-standin`: the stand-in API server on a port of its own, for trying kubectl
//! or a client against it by hand. Tests start it in their own process instead.

use liftoff_kube_standin::{Config, Standin};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr: std::net::SocketAddr = ([127, 0, 0, 1], 6443).into();
    let mut config = Config::default();
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--listen", Some(v)) => addr = v.parse().unwrap_or_else(|e| fail(&format!("--listen {v:?}: {e}"))),
            ("--token", Some(v)) => config.token = Some(v),
            ("--cpu-millis", Some(v)) => config.cpu_millis = v.parse().unwrap_or_else(|e| fail(&format!("--cpu-millis {v:?}: {e}"))),
            ("--memory-bytes", Some(v)) => config.memory_bytes = v.parse().unwrap_or_else(|e| fail(&format!("--memory-bytes {v:?}: {e}"))),
            (other, _) => fail(&format!("unknown or incomplete option {other:?} (takes --listen ADDR, --token T, --cpu-millis N, --memory-bytes N)")),
        }
    }
    let standin = Standin::start(addr, config)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    println!("{}", standin.kubeconfig("default"));
    let _ = tokio::signal::ctrl_c().await;
    standin.stop().await;
}

fn fail(message: &str) -> ! {
    eprintln!("liftoff-kube-standin: {message}");
    std::process::exit(2)
}
