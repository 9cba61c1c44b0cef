"""The HTTP adapter end to end: a real broker, the validator and the tracker, the adapter
served by uvicorn in a process of its own, two agencies that speak only HTTP and one on AMQP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from adapters.http import signing as signing_of_adapter
from adapters.http import vdxp
from backbone import edxml, signing
from backbone.broker import topology
from backbone.client import AsyncGateway
from backbone.edxml.factory import new_status
from backbone.store import Store
from backbone.store.models import MailboxMessage

from ..conftest import SENDER, Signer, make_document
from .conftest import Pipeline
from .helpers import ready_count, wait_for
from .http_adapter import GATEWAY, WebhookTarget, running_adapter, start_adapter

pytestmark = pytest.mark.pipeline
H41, H14 = "000.00.00.H41", "000.00.00.H14"  # both behind the adapter; SENDER (G22) on AMQP
XML = {"content-type": "application/xml"}


@pytest.fixture
def h14(pki: signing.Pki, tmp_path: Path) -> Signer:
    issued = pki.issue(H14, tmp_path / "h14")
    return Signer(issued.code, issued.key, issued.certificate, issued.fingerprint)


async def _behind_the_adapter(pipeline: Pipeline) -> None:
    await pipeline.add_agency(SENDER)
    for code in (H41, H14):
        await pipeline.add_agency(code, inbox=False)
    await pipeline.add_gateway(GATEWAY, [H41, H14])


async def _peeked(client: httpx.AsyncClient, kind: str) -> dict[str, Any]:
    """The next message of ``kind``, locked, once one is there."""
    found: dict[str, Any] = {}

    async def arrived() -> bool:
        answer = await client.post("/v1/inbox/peek", params={"kind": kind})
        assert answer.status_code in (200, 204), answer.text
        if answer.status_code == 200:
            found.update(answer.json())
        return bool(found)

    await wait_for(arrived, 60)
    return found


async def test_two_http_agencies_and_one_on_amqp_exchange_a_document_and_its_statuses(
    pipeline: Pipeline, signers: dict[str, Signer], h14: Signer, tmp_path: Path
) -> None:
    await _behind_the_adapter(pipeline)
    document = make_document(
        sender=H41, recipients=[H14, SENDER], document_id=f"http-{uuid.uuid4().hex[:8]}"
    )
    body = signers["H41"].sign(document)
    async with running_adapter(pipeline, tmp_path / "adapter.log") as adapter:
        sender_auth, recipient_auth = await adapter.credential(H41), await adapter.credential(H14)
        async with adapter.client(sender_auth) as sender, adapter.client(recipient_auth) as dms:
            target = WebhookTarget()
            target.start()
            subscribed = await sender.post("/v1/webhooks", json={"url": target.url})
            assert subscribed.status_code == 201, subscribed.text
            webhook_secret = subscribed.json()["secret"].encode()
            sent = await sender.post(
                "/v1/documents", content=body, headers={**XML, "idempotency-key": "first-send"}
            )
            assert sent.status_code == 202, sent.text
            assert sent.json()["document_id"] == document.document_id
            again = await sender.post(
                "/v1/documents", content=body, headers={**XML, "idempotency-key": "first-send"}
            )
            assert again.json() == sent.json()  # the first answer, nothing sent twice

            # the recipient's system: peek, download byte for byte, acknowledge
            locked = await _peeked(dms, "edoc")
            message = locked["message"]
            assert (message["sender"], message["document_id"]) == (H41, document.document_id)
            package = await dms.get(f"/v1/inbox/{message['id']}/package")
            assert package.content == body  # as signed: the DMS can verify it
            assert package.headers["x-content-sha256"] == hashlib.sha256(body).hexdigest()
            first = document.attachments[0]
            attached = await dms.get(f"/v1/inbox/{message['id']}/attachments/{first.content_id}")
            assert attached.content == first.data
            acked = await dms.post(f"/v1/inbox/{message['id']}/ack", json={"result": "done"})
            assert acked.json()["result"] == "done"
            assert (await dms.get("/v1/inbox/count", params={"kind": "edoc"})).json() == {
                "count": 0
            }
            # its statuses, signed by its own key
            for code in ("01", "03", "06"):
                status = h14.sign(new_status(reporter=H14, document=document, status_code=code))
                answer = await dms.post("/v1/statuses", content=status, headers=XML)
                assert answer.status_code == 202, answer.text

            # the agency on AMQP receives it too (and answers 01 by itself)
            async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as amqp:
                received = [
                    d async for d in amqp.receive(topology.inbox(SENDER), timeout=30, count=1)
                ]
                assert received[0].package.document_id == document.document_id
                await received[0].ack()

            # the sender reads every recipient's status and history
            history: dict[str, Any] = {}

            async def recorded() -> bool:
                answer = await sender.get(f"/v1/documents/{document.document_id}")
                if answer.status_code != 200:
                    return False
                history.update({r["recipient"]: r for r in answer.json()["recipients"]})
                h14_statuses = [
                    e for e in (history.get(H14) or {}).get("history", []) if e["kind"] == "status"
                ]
                return (
                    len(h14_statuses) == 3
                    and (history.get(SENDER) or {}).get("status_code") == "01"
                )

            await wait_for(recorded, 60)
            # in the order the backbone recorded them: three statuses sent one after another
            # may be validated side by side, so 06 can be recorded before 03; a 03 after 06
            # is kept in the history and does not undo the final 06
            statuses = [e["status_code"] for e in history[H14]["history"] if e["kind"] == "status"]
            assert sorted(statuses) == ["01", "03", "06"]
            assert history[H14]["status_code"] == "06"

            # the same, as a feed read page by page with its cursor
            whole = (await sender.get("/v1/statuses")).json()
            assert whole["next"] is None
            paged, after = [], 0
            while after is not None:
                page = (
                    await sender.get("/v1/statuses", params={"after": after, "limit": 2})
                ).json()
                paged += page["items"]
                after = page["next"]
            assert paged == whole["items"]
            seen = {(e["kind"], e["recipient"], e["status_code"]) for e in paged}
            assert {("status", H14, code) for code in ("01", "03", "06")} < seen
            assert ("status", SENDER, "01") in seen and ("accepted", None, None) in seen
            tracked = (await sender.get(f"/v1/documents/{document.document_id}")).json()
            assert {e["backbone_id"] for e in paged} == {tracked["backbone_id"]}

            # and the statuses themselves, in its mailbox: three from H14, one from G22
            forwarded: list[tuple[str, str]] = []

            async def all_forwarded() -> bool:
                page = (await sender.get("/v1/inbox", params={"kind": "status"})).json()
                forwarded[:] = [(m["sender"], m["status_code"]) for m in page["items"]]
                return len(forwarded) >= 4

            await wait_for(all_forwarded, 60)
            assert sorted(forwarded) == sorted(
                [(H14, "01"), (H14, "03"), (H14, "06"), (SENDER, "01")]
            )
            for item in (await sender.get("/v1/inbox")).json()["items"]:
                got = await sender.get(f"/v1/inbox/{item['id']}/package")
                assert edxml.parse(got.content).document_id == document.document_id

            # and it was called for each, every call signed with the webhook's secret
            await wait_for(lambda: _at_least(target.calls, 4), 60)
            target.stop()
            called = set()
            for headers, call in target.calls:
                assert signing_of_adapter.webhook_matches(
                    webhook_secret,
                    headers["x-backbone-timestamp"],
                    call,
                    headers["x-backbone-signature"],
                )
                message = json.loads(call)["message"]
                called.add((message["sender"], message["status_code"]))
            assert called == set(forwarded)
            state = (await sender.get("/v1/webhooks")).json()
            assert state[0]["pending"] == 0 and state[0]["last_error"] is None


class Axis:
    """A system written for the national axis: the SDK's calls, signed as the SDK signs
    them, on ``/vdxp``."""

    def __init__(self, client: httpx.AsyncClient, auth: signing_of_adapter.HmacAuth) -> None:
        self.client, self.auth = client, auth

    async def call(
        self, operation: str, content: bytes | None = None, method: str = "POST", **fields: str
    ) -> httpx.Response:
        # what the SDK puts in every call beside the operation's own fields
        fields = {"timestamp": "06122026T101500+0123", "Content-Type": "application/json", **fields}
        headers = vdxp.sign_headers(self.auth.key_id, self.auth.secret.decode(), fields)
        return await self.client.request(
            method, f"/vdxp/{operation}", headers=headers, content=content
        )

    async def ok(
        self, operation: str, content: bytes | None = None, method: str = "POST", **fields: str
    ) -> dict[str, Any]:
        answer = await self.call(operation, content, method, **fields)
        envelope = answer.json()
        assert (answer.status_code, envelope["status"], envelope["ErrorCode"]) == (
            200,
            "OK",
            "0",
        ), answer.text
        return dict(envelope)


async def test_the_same_exchange_through_the_axis_sdk_s_operations(
    pipeline: Pipeline, signers: dict[str, Signer], h14: Signer, tmp_path: Path
) -> None:
    """Two systems written for the national axis (``/vdxp``) and one agency on AMQP: send,
    list, get, acknowledge, answer 01, 03, 06, read the per-recipient state, the statuses
    and the directory, as the SDK calls them."""
    await _behind_the_adapter(pipeline)
    document = make_document(
        sender=H41, recipients=[H14, SENDER], document_id=f"axis-{uuid.uuid4().hex[:8]}"
    )
    body = signers["H41"].sign(document)
    async with running_adapter(pipeline, tmp_path / "adapter.log") as adapter:
        sender_auth, recipient_auth = await adapter.credential(H41), await adapter.credential(H14)
        async with adapter.client() as plain:
            sender, dms = Axis(plain, sender_auth), Axis(plain, recipient_auth)
            sent = await sender.ok(
                "sendEdoc",
                body + b"\r\n",  # as the SDK sends a file
                **{"from": H41, "servicetype": "eDoc", "messagetype": "edoc"},
                **{"Content-Type": "application/octet-stream"},
            )
            assert sent["DocId"] == document.document_id
            again = await sender.ok("sendEdoc", body, **{"from": H41, "messagetype": "edoc"})
            assert again == sent  # a retried call: the first answer, nothing sent twice

            listed: list[dict[str, Any]] = []

            async def arrived() -> bool:
                envelope = await dms.ok(
                    "getReceivedEdocList", messagetype="edoc", servicetype="eDoc"
                )
                listed[:] = envelope["data"]
                return bool(listed)

            await wait_for(arrived, 60)
            (item,) = listed
            assert (item["from"], item["to"], item["messageType"]) == (H41, H14, "edoc")
            assert item["contentSha256"] == hashlib.sha256(body).hexdigest()
            got = await dms.ok("getEdoc", docId=item["docId"], filePath="/tmp/edoc")
            assert base64.b64decode(got["data"]) == body  # as signed: the DMS can verify it
            downloaded = await dms.call("downloadEdoc", method="GET", docId=item["docId"])
            assert downloaded.content == body
            assert (await dms.ok("countReceiveEdoc"))["count"] == 1
            await dms.ok("updateStatus", docId=item["docId"], status="processing")
            assert (await dms.ok("countReceiveEdoc"))["count"] == 1
            await dms.ok("updateStatus", docid=item["docId"], status="done")
            assert (await dms.ok("countReceiveEdoc"))["count"] == 0
            assert (await dms.ok("getReceivedEdocList", messagetype="edoc"))["data"] == []
            for code in ("01", "03", "06"):
                status = h14.sign(new_status(reporter=H14, document=document, status_code=code))
                await dms.ok("sendEdoc", status, **{"from": H14, "messagetype": "status"})

            async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as amqp:
                received = [
                    d async for d in amqp.receive(topology.inbox(SENDER), timeout=30, count=1)
                ]
                await received[0].ack()  # and it answers 01

            states: dict[str, dict[str, Any]] = {}

            async def recorded() -> bool:
                envelope = await sender.ok("getSentEdocList", docId=document.document_id)
                states.update({s["toCode"]: s for s in envelope["data"]})
                return (states.get(H14) or {}).get("receiveStatus") == "06" and (
                    states.get(SENDER) or {}
                ).get("receiveStatus") == "01"

            await wait_for(recorded, 60)
            assert states[H14]["title"] == document.header.subject
            assert states[H14]["sendStatus"] == "routed" and states[H14]["receivedTime"]

            statuses: list[dict[str, Any]] = []

            async def all_arrived() -> bool:
                envelope = await sender.ok("getReceivedEdocList", messagetype="status")
                statuses[:] = envelope["data"]
                return len(statuses) >= 4

            await wait_for(all_arrived, 60)
            assert sorted((s["from"], s["status_desc"]) for s in statuses) == sorted(
                [(H14, "01"), (H14, "03"), (H14, "06"), (SENDER, "01")]
            )
            assert (await sender.ok("countReceiveStatus"))["count"] == 4

            units = {u["code"]: u for u in (await sender.ok("getSynchronizeUnit"))["data"]}
            assert units[H14]["centerCode"] == GATEWAY and units[H14]["deleted"] is False
            newest = max(u["version"] for u in units.values())
            later = await sender.ok("getSynchronizeUnit", version=str(newest))
            assert later["data"] == []
            names = {a["code"]: a for a in (await sender.ok("getAgenciesList"))["data"]}
            assert {H41, H14, SENDER} <= set(names)

            # refusals, in the envelope: another's message, an unsigned field, a bad
            # signature, the directory's writes
            for operation, method, fields in [
                ("getEdoc", "POST", {}),
                ("downloadEdoc", "GET", {}),
                ("updateStatus", "POST", {"status": "fail"}),
            ]:
                theirs = await sender.call(operation, None, method, docId=item["docId"], **fields)
                assert (theirs.status_code, theirs.json()["ErrorCode"]) == (404, "not-found")
            headers = vdxp.sign_headers(recipient_auth.key_id, recipient_auth.secret.decode(), {})
            unsigned = await plain.post(
                "/vdxp/getEdoc", headers={**headers, "XroadVnpt-docId": str(item["docId"])}
            )
            assert unsigned.json()["ErrorCode"] == "docid-invalid"  # read from what is signed
            odd = vdxp.sign_headers(
                recipient_auth.key_id, recipient_auth.secret.decode(), {"docId": "\u00b2"}
            )  # a digit to str.isdigit(), not to int(); signed, so only its JSON escape is sent
            odd.pop("XroadVnpt-docId")
            superscript = await plain.post("/vdxp/getEdoc", headers=odd)
            assert (superscript.status_code, superscript.json()["ErrorCode"]) == (
                400,
                "docid-invalid",
            )
            forged = {**headers, "XroadVnpt-hash-header": "0" * 64}
            refused = await plain.post("/vdxp/countReceiveEdoc", headers=forged)
            assert refused.status_code == 401
            assert refused.json()["status"] == "FAIL" and "ErrorDesc" in refused.json()
            written = await sender.call("registerAgency", content=b"{}")
            assert (written.status_code, written.json()["ErrorCode"]) == (
                403,
                "directory-read-only",
            )


async def test_the_adapter_builds_and_signs_for_the_agencies_whose_keys_it_holds(
    pipeline: Pipeline, signers: dict[str, Signer], h14: Signer, tmp_path: Path
) -> None:
    """Metadata and files in, a signed document out; statuses from JSON; the 01 (or the
    02 with its reason) sent when the recipient's system acknowledges."""
    await _behind_the_adapter(pipeline)
    held = [signers["H41"], h14]
    async with running_adapter(pipeline, tmp_path / "adapter.log", held) as adapter:
        sender_auth, recipient_auth = await adapter.credential(H41), await adapter.credential(H14)
        g22_auth = await adapter.credential(SENDER)  # its key is not held
        async with (
            adapter.client(sender_auth) as sender,
            adapter.client(recipient_auth) as dms,
            adapter.client(g22_auth) as g22,
        ):
            scan = b"%PDF-1.7 " + bytes(range(256)) * 40

            def composed(subject: str, sender_code: str = H41) -> httpx.Request:
                metadata = {
                    "sender": sender_code,
                    "recipients": [H14],
                    "subject": subject,
                    "number": str(uuid.uuid4().int % 10_000),
                    "notation": "UBND-VP",
                }
                return sender.build_request(
                    "POST",
                    "/v1/documents",
                    data={"metadata": json.dumps(metadata, ensure_ascii=False)},
                    files=[
                        ("files", ("Tờ trình.pdf", scan, "application/pdf")),
                        ("files", ("../../phụ lục.txt", "Phụ lục".encode(), "text/plain")),
                    ],
                    headers={"idempotency-key": hashlib.sha256(subject.encode()).hexdigest()},
                )

            first = composed("Về việc cấp phép")
            sent = await sender.send(first)
            assert sent.status_code == 202, sent.text
            again = await sender.send(first)  # the same request retried
            assert again.json() == sent.json()
            refused = await g22.send(composed("Không ký được", SENDER))
            assert (refused.status_code, refused.json()["code"]) == (422, "no-signing-key")
            theirs = await dms.send(composed("Không phải của bạn"))
            assert (theirs.status_code, theirs.json()["code"]) == (403, "not-your-agency")

            message = (await _peeked(dms, "edoc"))["message"]
            package = edxml.parse((await dms.get(f"/v1/inbox/{message['id']}/package")).content)
            assert isinstance(package, edxml.DocumentPackage)
            assert (package.sender, package.header.subject) == (H41, "Về việc cấp phép")
            assert [(a.attachment_name, a.data) for a in package.attachments] == [
                ("Tờ trình.pdf", scan),
                ("../../phụ lục.txt", "Phụ lục".encode()),  # a name, never a path here
            ]
            acked = await dms.post(f"/v1/inbox/{message['id']}/ack", json={"result": "done"})
            assert acked.status_code == 200, acked.text
            for code in ("03", "06"):
                answer = await dms.post(
                    "/v1/statuses", json={"message": message["id"], "code": code}
                )
                assert answer.status_code == 202, answer.text
                assert answer.json()["status_code"] == code

            second = await sender.send(composed("Bản thứ hai"))
            assert second.status_code == 202, second.text
            other = (await _peeked(dms, "edoc"))["message"]
            failed = await dms.post(
                f"/v1/inbox/{other['id']}/ack",
                json={"result": "fail", "reason": "tệp đính kèm không mở được"},
            )
            assert failed.status_code == 200, failed.text

            statuses: dict[str, list[tuple[str, str]]] = {}

            async def recorded() -> bool:
                for answer in (sent, second):
                    document_id = answer.json()["document_id"]
                    tracked = await sender.get(f"/v1/documents/{document_id}")
                    if tracked.status_code != 200:
                        return False
                    (recipient,) = tracked.json()["recipients"]
                    statuses[document_id] = [
                        (e["status_code"], e["description"] or "")
                        for e in recipient["history"]
                        if e["kind"] == "status"
                    ]
                first_codes = sorted(code for code, _ in statuses[sent.json()["document_id"]])
                return first_codes == ["01", "03", "06"] and bool(
                    statuses[second.json()["document_id"]]
                )

            await wait_for(recorded, 60)
            ((code, reason),) = statuses[second.json()["document_id"]]
            assert code == "02" and "tệp đính kèm không mở được" in reason


async def test_a_credential_reaches_only_its_own_agencies_on_every_endpoint(
    pipeline: Pipeline, signers: dict[str, Signer], h14: Signer, tmp_path: Path
) -> None:
    """H41's system sends H14 a document; H14's system is the intruder on H41's side and
    H41's on H14's: a request naming the other agency is refused (403), a message id of
    the other's mailbox is not found (404, as one that does not exist), and nothing of the
    other's shows in a listing. Unsigned, every /v1 endpoint is 401."""
    await _behind_the_adapter(pipeline)
    document = make_document(sender=H41, recipients=[H14], document_id=f"x-{uuid.uuid4().hex[:8]}")
    body = signers["H41"].sign(document)
    status_of_h41 = signers["H41"].sign(
        new_status(reporter=H41, document=document, status_code="03")
    )
    async with running_adapter(pipeline, tmp_path / "adapter.log") as adapter:
        h41, h14_auth = await adapter.credential(H41), await adapter.credential(H14)
        async with adapter.client(h41) as of_h41, adapter.client(h14_auth) as of_h14:
            assert (
                await of_h41.post("/v1/documents", content=body, headers=XML)
            ).status_code == 202
            theirs = (await _peeked(of_h14, "edoc"))["message"]["id"]  # H14's, locked a moment
            content_id = document.attachments[0].content_id
            refused = {  # (client, method, path, params, body): expected status
                (of_h14, "GET", "/v1/inbox", (("agency", H41),), None): 403,
                (of_h14, "GET", "/v1/inbox/count", (("agency", H41),), None): 403,
                (of_h14, "GET", "/v1/statuses", (("agency", H41),), None): 403,
                (of_h14, "POST", "/v1/inbox/peek", (("agency", H41),), None): 403,
                (
                    of_h14,
                    "GET",
                    f"/v1/documents/{document.document_id}",
                    (("sender", H41),),
                    None,
                ): 403,
                (of_h14, "GET", f"/v1/documents/{document.document_id}", (), None): 404,
                (of_h14, "POST", "/v1/documents", (), body): 403,
                (of_h14, "POST", "/v1/statuses", (), status_of_h41): 403,
                (of_h41, "GET", f"/v1/inbox/{theirs}", (), None): 404,
                (of_h41, "GET", f"/v1/inbox/{theirs}/package", (), None): 404,
                (of_h41, "GET", f"/v1/inbox/{theirs}/attachments/{content_id}", (), None): 404,
                (of_h41, "POST", f"/v1/inbox/{theirs}/ack", (), b'{"result": "done"}'): 404,
                (
                    of_h41,
                    "POST",
                    "/v1/statuses",
                    (),
                    json.dumps({"message": theirs, "code": "03"}).encode(),
                ): 404,
            }
            for (client, method, path, params, content), expected in refused.items():
                headers = XML if path.endswith(("documents", "statuses")) else {}
                if path.endswith("/ack") or (content or b"").startswith(b"{"):
                    headers = {"content-type": "application/json"}
                answer = await client.request(
                    method, path, params=params, content=content, headers=headers
                )
                assert answer.status_code == expected, (method, path, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert document.header.subject not in answer.text
            # nothing of H14's in H41's listings, and H14's message is still unacknowledged
            assert (await of_h41.get("/v1/inbox")).json()["items"] == []
            assert (await of_h41.get("/v1/inbox/count")).json() == {"count": 0}
            assert (await of_h14.get("/v1/statuses")).json()["items"] == []  # H41's document's
            assert (await of_h14.get(f"/v1/inbox/{theirs}")).json()["acknowledged_at"] is None

        async with adapter.client() as anonymous:  # unsigned
            for method, path in [
                ("GET", "/v1/inbox"),
                ("GET", "/v1/inbox/count"),
                ("POST", "/v1/inbox/peek"),
                ("GET", f"/v1/inbox/{theirs}"),
                ("GET", f"/v1/inbox/{theirs}/package"),
                ("GET", f"/v1/inbox/{theirs}/attachments/{content_id}"),
                ("POST", f"/v1/inbox/{theirs}/ack"),
                ("POST", "/v1/documents"),
                ("POST", "/v1/statuses"),
                ("GET", f"/v1/documents/{document.document_id}"),
                ("GET", "/v1/statuses"),
                ("GET", "/v1/directory/agencies"),
                ("GET", f"/v1/directory/agencies/{H14}"),
            ]:
                answer = await anonymous.request(method, path)
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.json()["code"] == "signature-missing"


async def test_the_directory_is_synced_incrementally_with_its_removed_agencies(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await _behind_the_adapter(pipeline)
    async with (
        running_adapter(pipeline, tmp_path / "adapter.log") as adapter,
        adapter.client(await adapter.credential(H41)) as dms,
    ):
        first = (await dms.get("/v1/directory/agencies")).json()
        units = {e["code"]: e for e in first["items"]}
        assert {H41, H14, SENDER} <= set(units) and first["more"] is False
        assert (units[H41]["hub"], units[H14]["hub"], units[SENDER]["hub"]) == (
            GATEWAY,
            GATEWAY,
            None,
        )
        assert first["version"] == max(e["version"] for e in first["items"])

        await pipeline.registry.deactivate_agency(H14)
        await pipeline.registry.add_agency("000.00.00.H26", "Hưng Yên", principal=False)
        later = await dms.get("/v1/directory/agencies", params={"since": first["version"]})
        changes = later.json()
        assert [(e["code"], e["deleted"]) for e in changes["items"]] == [
            (H14, True),
            ("000.00.00.H26", False),
        ]
        assert changes["items"][1]["name"] == "Hưng Yên"
        settled = await dms.get("/v1/directory/agencies", params={"since": changes["version"]})
        assert settled.json() == {"items": [], "version": changes["version"], "more": False}
        one = (await dms.get("/v1/directory/agencies", params={"limit": 1})).json()
        assert len(one["items"]) == 1 and one["more"] is True


async def test_an_adapter_killed_while_filling_its_mailbox_loses_and_doubles_nothing(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """200 documents wait for H14; the adapter is killed (SIGKILL) while it commits them
    to the mailbox, then started again: each is in the mailbox exactly once."""
    await _behind_the_adapter(pipeline)
    ids = [f"kill-{i}-{uuid.uuid4().hex[:6]}" for i in range(200)]
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as amqp:
        for document_id in ids:
            package = make_document(recipients=[H14], document_id=document_id)
            await amqp.send(signers["G22"].sign(package))
    queue = topology.gateway_queue(GATEWAY)
    await wait_for(lambda: _waiting_at_least(pipeline, queue, 200), 120)

    first = await start_adapter(pipeline, tmp_path / "first.log")
    await wait_for(lambda: _in_mailbox_at_least(pipeline, 20), 60)
    first.kill()  # mid-fill: committed rows, and deliveries held unacked
    assert len(await _mailbox(pipeline)) < 200  # it really died part way

    second = await start_adapter(pipeline, tmp_path / "second.log", vault_key=first.vault_key)
    try:
        await wait_for(lambda: _in_mailbox_at_least(pipeline, 200), 120)
        await wait_for(lambda: _waiting_at_most(pipeline, queue, 0), 60)
    finally:
        assert second.stop() == 0
    assert '"event": "mailbox stopped"' in second.log.read_text()
    rows = await _mailbox(pipeline)
    assert sorted(rows) == sorted(ids)  # each once: none lost, none doubled


async def _mailbox(pipeline: Pipeline) -> list[str]:
    store = Store(pipeline.settings.database_url)
    try:
        async with store.sessions() as session:
            found = await session.execute(select(MailboxMessage.document_id))
            return [str(d) for d in found.scalars()]
    finally:
        await store.close()


async def _in_mailbox_at_least(pipeline: Pipeline, count: int) -> bool:
    return len(await _mailbox(pipeline)) >= count


async def _waiting_at_least(pipeline: Pipeline, queue: str, count: int) -> bool:
    return await ready_count(pipeline.url(), queue) >= count


async def _waiting_at_most(pipeline: Pipeline, queue: str, count: int) -> bool:
    return await ready_count(pipeline.url(), queue) <= count


async def _at_least(items: Sequence[object], count: int) -> bool:
    return len(items) >= count


async def test_a_webhook_target_down_for_30_s_gets_every_call_afterwards(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    await _behind_the_adapter(pipeline)
    target = WebhookTarget()  # its port chosen, nothing listening on it yet
    ids = [f"hook-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    async with running_adapter(pipeline, tmp_path / "adapter.log") as adapter:
        auth = await adapter.credential(H14)
        async with adapter.client(auth) as dms:
            subscribed = await dms.post("/v1/webhooks", json={"url": target.url, "kinds": ["edoc"]})
            webhook = subscribed.json()["id"]
            async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as amqp:
                for document_id in ids:
                    package = make_document(recipients=[H14], document_id=document_id)
                    await amqp.send(signers["G22"].sign(package))
            state: dict[str, Any] = {}

            async def failing() -> bool:
                state.update((await dms.get("/v1/webhooks")).json()[0])
                return state["pending"] == 5 and state["last_error"] is not None

            await wait_for(failing, 60)
            assert state["id"] == webhook and "Connect" in state["last_error"]
            down_since = time.monotonic()
            await asyncio.sleep(30)  # the outage the acceptance asks for
            assert (await dms.get("/v1/webhooks")).json()[0]["pending"] == 5  # still owed
            target.start()
            try:
                await wait_for(lambda: _at_least(target.calls, 5), 60)
            finally:
                target.stop()
            assert time.monotonic() - down_since >= 30
            called = sorted(json.loads(body)["message"]["document_id"] for _, body in target.calls)
            assert called == sorted(ids)  # every call, once
            after = (await dms.get("/v1/webhooks")).json()[0]
            assert after["pending"] == 0 and after["last_error"] is None


def _server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "adapter.pem", directory / "adapter.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_the_adapter_serves_https_with_the_certificate_it_is_given(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await _behind_the_adapter(pipeline)
    tls = _server_certificate(tmp_path)
    adapter = await start_adapter(pipeline, tmp_path / "adapter.log", tls=tls)
    try:
        assert adapter.base_url.startswith("https://")
        async with adapter.client(await adapter.credential(H14)) as client:
            answer = await client.get("/v1/inbox/count")
            assert answer.status_code == 200 and answer.json() == {"count": 0}
        plain = adapter.base_url.replace("https://", "http://")
        async with httpx.AsyncClient() as insecure:  # no plain HTTP on a TLS port
            with pytest.raises(httpx.HTTPError):
                await insecure.get(f"{plain}/health")
        async with httpx.AsyncClient() as untrusting:  # and a client must trust its certificate
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"{adapter.base_url}/health")
    finally:
        assert adapter.stop() == 0
