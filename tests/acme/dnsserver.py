"""A small authoritative DNS server on loopback that takes RFC 2136 dynamic updates
signed with TSIG, built on dnspython, for the DNS-01 tests (Pebble's ``-dnsserver``).

It is authoritative for one zone and answers TXT and CNAME from what the updates
wrote (following an in-zone CNAME as an authoritative server does), and 127.0.0.1 for
every A question unless ``add_record`` gave the name other addresses (Pebble resolves
nothing else through it). An update without the
right TSIG signature is refused with NOTAUTH and changes nothing; every accepted
update is kept in ``updates`` for the tests to look at.
"""
from __future__ import annotations

import base64
import os
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from tests.support import free_port

KEY_NAME = "switchyard-test."


class DnsServer:
    def __init__(self, zone: str, key_name: str = KEY_NAME, algorithm: str = "hmac-sha256"):
        self.zone = dns.name.from_text(zone)
        self.key_name, self.algorithm = key_name, algorithm
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.keyring = dns.tsigkeyring.from_text({key_name: (algorithm, self.secret)})
        self.port = free_port()
        self.records: dict[tuple[dns.name.Name, int], set[str]] = {}
        self.updates: list[list[str]] = []  # each accepted update, as its rrsets' text
        self.refused = 0
        self.lock = threading.Lock()
        self.servers: list[socketserver.BaseServer] = []

    # ------------------------------------------------------------------ data

    def add_record(self, name: str, rdtype: str, value: str) -> None:
        with self.lock:
            self.records.setdefault((dns.name.from_text(name), dns.rdatatype.from_text(rdtype)), set()).add(value)

    def txt(self, name: str) -> set[str]:
        with self.lock:
            values = self.records.get((dns.name.from_text(name), dns.rdatatype.TXT), set())
            return {v.strip('"') for v in values}

    # ------------------------------------------------------------------ protocol

    def answer(self, wire: bytes) -> bytes | None:
        try:
            request = dns.message.from_wire(wire, keyring=self.keyring)
        except (dns.message.UnknownTSIGKey, dns.tsig.BadSignature, dns.tsig.PeerError):
            self.refused += 1
            return self._error(wire, dns.rcode.NOTAUTH)
        except Exception:  # noqa: BLE001 - garbage gets FORMERR, never a crash
            return self._error(wire, dns.rcode.FORMERR)
        response = dns.message.make_response(request)
        if request.opcode() == dns.opcode.UPDATE:
            response.set_rcode(self._update(request))
        else:
            self._query(request, response)
        return response.to_wire()

    def _error(self, wire: bytes, rcode: int) -> bytes | None:
        if len(wire) < 12:
            return None
        qid, flags = struct.unpack("!HH", wire[:4])
        flags = (flags | dns.flags.QR) & ~0x000F | rcode
        return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)

    def _update(self, request) -> int:
        if not request.had_tsig or request.keyname != dns.name.from_text(self.key_name):
            self.refused += 1
            return dns.rcode.REFUSED
        if not request.zone or request.zone[0].name != self.zone:
            return dns.rcode.NOTAUTH
        changes = list(request.update)
        if any(not rrset.name.is_subdomain(self.zone) for rrset in changes):
            return dns.rcode.NOTZONE
        with self.lock:
            for rrset in changes:
                key = (rrset.name, rrset.rdtype)
                if rrset.deleting == dns.rdataclass.ANY:
                    self.records.pop(key, None)
                elif rrset.deleting == dns.rdataclass.NONE:
                    current = self.records.get(key, set())
                    current.difference_update(r.to_text() for r in rrset)
                    if not current:
                        self.records.pop(key, None)
                else:
                    self.records.setdefault(key, set()).update(r.to_text() for r in rrset)
            self.updates.append([rrset.to_text() for rrset in changes])
        return dns.rcode.NOERROR

    def _query(self, request, response) -> None:
        response.flags |= dns.flags.AA
        if not request.question:
            return
        question = request.question[0]
        name, rdtype = question.name, question.rdtype
        with self.lock:
            if rdtype == dns.rdatatype.A:
                addresses = sorted(self.records.get((name, rdtype), {"127.0.0.1"}))
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", "A", addresses))
                return
            for _ in range(8):  # follow in-zone CNAMEs
                target = self.records.get((name, dns.rdatatype.CNAME))
                if not target or rdtype == dns.rdatatype.CNAME:
                    break
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", "CNAME", sorted(target)))
                name = dns.name.from_text(sorted(target)[0])
            values = self.records.get((name, rdtype))
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", dns.rdatatype.to_text(rdtype),
                                                                sorted(values)))

    # ------------------------------------------------------------------ sockets

    def start(self) -> "DnsServer":
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = server.answer(data)
                if reply:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    head = self._read(2)
                    if not head:
                        return
                    reply = server.answer(self._read(struct.unpack("!H", head)[0]))
                    if not reply:
                        return
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

            def _read(self, n: int) -> bytes:
                data = b""
                while len(data) < n:
                    chunk = self.request.recv(n - len(data))
                    if not chunk:
                        return b""
                    data += chunk
                return data

        for cls, handler in ((socketserver.ThreadingUDPServer, Udp), (socketserver.ThreadingTCPServer, Tcp)):
            cls.allow_reuse_address = True
            cls.daemon_threads = True
            srv = cls(("127.0.0.1", self.port), handler)
            self.servers.append(srv)
            threading.Thread(target=srv.serve_forever, daemon=True, name=f"dns-{cls.__name__}").start()
        return self

    def close(self) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
