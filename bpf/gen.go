// Package bpf holds vpcd's eBPF programs (C sources beside this file) and the
// Go bindings bpf2go generates from them. The generated objects are committed
// so that building vpcd needs no clang; `make generate` rebuilds them.
package bpf

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type drop_reason -type event_hook -type drop_event -type vpcd_config -type eni_info -type route_key -type route -type peer_info -type underlay_allow_key -type underlay_from_key -type eni_counter -type lpm_v4_key -type mirror_key -type mirror_set -type mirror_rule -type mirror_session -type mirror_counter -type usage_slot -type ct_state -type direction Eni eni.c
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel EniXdp eni_xdp.c
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel Tunnel tunnel.c
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel Underlay underlay.c
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel UnderlayXdp underlay_xdp.c
//go:generate go run ./internal/genlimits eni_bpfel.o limits/limits.go
