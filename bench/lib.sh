# Shared by the bench scripts (sourced; each script stays runnable alone): free loopback ports,
# waiting for the ready files sluice and sluice-sim write once they listen, and reading the
# router's ports from its ready file.

# free_port: a free port chosen at random below the kernel's ephemeral range, where outgoing
# connections cannot take it between this check and the listener's bind.
free_port() {
  python3 -c '
import random, socket
for _ in range(100):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit("no free port in 20000-31999")'
}

# wait_file PATH: until the file exists and is not empty (10 s at most, then the script fails).
wait_file() {
  for _ in $(seq 400); do [ -s "$1" ] && return 0; sleep 0.025; done
  echo "timeout waiting for $1" >&2
  exit 1
}

# ready_port FILE listener|admin|metrics: a port from a router ready file.
ready_port() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# The fixed OpenAI chat response the benchmarks' nginx upstreams return.
BENCH_RESPONSE='{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":8,"total_tokens":258}}'

# nginx_head WORK: the start of a benchmark nginx.conf rooted in WORK (pid, logs, temp paths,
# keep-alive), open inside `http {` for the caller's servers and the closing brace.
nginx_head() {
  mkdir -p "$1/logs"
  cat <<NGINX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fcgi; uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
NGINX
}
