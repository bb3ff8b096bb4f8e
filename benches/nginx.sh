# Sourced by the benchmark harnesses: a free loopback port, and nginx
# (Debian nginx-light, one worker, keep-alive without limit) serving a
# 37-byte body on it from a throwaway configuration under a directory.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx DIR PORT [ADDR] [NETNS]: starts it in the background (its pid
# in $nginx_pid), listening on ADDR (default 127.0.0.1), inside network
# namespace NETNS if given, and waits until it answers.
start_nginx() {
  local dir=$1 port=$2 addr=${3:-127.0.0.1} netns=${4:-}
  local in=()
  [ -z "$netns" ] || in=(ip netns exec "$netns")
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  fastcgi_temp_path $dir;
  uwsgi_temp_path $dir;
  scgi_temp_path $dir;
  keepalive_requests 1000000;
  server {
    listen $addr:$port;
    location / { default_type text/plain; return 200 "hello from nginx, traced by kindling\n"; }
  }
}
CONF
  "${in[@]}" nginx -c "$dir/nginx.conf" -p "$dir" &
  nginx_pid=$!
  for _ in $(seq 50); do "${in[@]}" curl -s -o /dev/null "http://$addr:$port/" && return 0; sleep 0.1; done
  echo "nginx did not start on port $port" >&2
  return 1
}
