package main

import "testing"

func TestOnHost(t *testing.T) {
	for _, tc := range []struct {
		host, addr, want string
		wantErr          bool
	}{
		{host: "", addr: ":8081", want: ":8081"},
		{host: "127.4.0.3", addr: ":8081", want: "127.4.0.3:8081"},
		{host: "127.4.0.3", addr: "0.0.0.0:9443", want: "127.4.0.3:9443"},
		{host: "fd00::5", addr: ":8080", want: "[fd00::5]:8080"},
		{host: "127.4.0.3", addr: "0", want: "0"},
		{host: "127.4.0.3", addr: "8081", wantErr: true},
	} {
		got, err := onHost(tc.host, tc.addr)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("onHost(%q, %q) = %q, %v; want %q, error %v", tc.host, tc.addr, got, err, tc.want, tc.wantErr)
		}
	}
}
