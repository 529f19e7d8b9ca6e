"""What the run page's fields ask while a person fills them in: a photo uploaded on its own (and its
thumbnail), the members a user field finds, the records a record link finds; and that another
workspace reaches none of it."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

from PIL import Image

from tests.conftest import Api, World
from tests.integration.test_run_page import ORIGIN, a_run, page_post, step_id
from tests.integration.test_runs import publish, start


def a_photo(width: int = 1600, height: int = 1200) -> bytes:
    """A JPEG with detail in it (a gradient and stripes), as a phone's photo has."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 5) % 256, ((x ^ y) * 3) % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def upload(api: Api, run_id: str, data: bytes, name: str = "box.jpg", kind: str = "image/jpeg") -> Any:
    return await api.client.post(
        f"/runs/{run_id}/uploads",
        files={"file": (name, data, kind)},
        headers={**ORIGIN, "X-CSRF-Token": api.csrf or ""},
    )


async def test_a_photo_uploaded_on_its_own_has_a_small_thumbnail_and_rides_with_the_step(world: World) -> None:
    owner, _member, run, _ = await a_run(world)
    sent = await upload(owner, run["id"], a_photo())
    assert sent.status_code == 201, sent.text
    stored = sent.json()
    assert stored["name"] == "box.jpg" and stored["thumbnail"] == f"/files/{stored['id']}/thumbnail"

    thumb = await owner.client.get(stored["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert len(thumb.content) <= 30 * 1024
    assert "immutable" in thumb.headers["cache-control"] and thumb.headers["x-content-type-options"] == "nosniff"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 240

    # A file that is no image is kept, without a thumbnail.
    notes = await upload(owner, run["id"], b"notes", name="notes.txt", kind="text/plain")
    assert notes.status_code == 201 and notes.json()["thumbnail"] == ""
    assert (await owner.client.get(f"/files/{notes.json()['id']}/thumbnail")).status_code == 404

    # The step's form carries the uploaded photo's id; refused, the page shows it again as a thumbnail.
    pack = step_id(run, "pack")
    assert (await page_post(owner, f"/runs/{run['id']}/steps/{pack}/claim")).status_code == 303
    refused = await page_post(owner, f"/runs/{run['id']}/steps/{pack}/complete", {"photos_kept": stored["id"]})
    assert refused.status_code == 422
    assert f'<img src="/files/{stored["id"]}/thumbnail" alt="" loading="lazy"' in refused.text
    assert f'name="photos_kept" value="{stored["id"]}"' in refused.text
    done = await page_post(
        owner,
        f"/runs/{run['id']}/steps/{pack}/complete",
        {"photos_kept": stored["id"], "f_parcel": "SF1", "f_weight": "2"},
    )
    assert done.status_code == 303, done.text
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    finished = next(s for s in detail["steps"] if s["key"] == "pack")
    assert finished["status"] == "done"


async def test_a_user_field_finds_members_by_name_with_their_role(world: World) -> None:
    owner, _member, run, member_id = await a_run(world)
    found = await owner.client.get(f"/runs/{run['id']}/members", params={"q": "wang", "for_field": "field-f_packer"})
    assert found.status_code == 200
    assert f'data-pick-for="field-f_packer" data-value="{member_id}" data-label="Wang Fang"' in found.text
    assert "Member" in found.text and "Li Wei" not in found.text
    everyone = await owner.client.get(f"/runs/{run['id']}/members")
    assert "Li Wei" in everyone.text and "Wang Fang" in everyone.text and "Owner" in everyone.text
    # What names the field is only ever a field's id.
    odd = await owner.client.get(f"/runs/{run['id']}/members", params={"q": "li", "for_field": 'x" onclick="y'})
    assert 'data-pick-for="field-choice"' in odd.text and "onclick" not in odd.text
    none = await owner.client.get(f"/runs/{run['id']}/members", params={"q": "nobody-like-this"})
    assert "Nothing matches “nobody-like-this”." in none.text


async def linked_run(owner: Api, suffix: str, customers: list[tuple[str, str]]) -> tuple[str, str, list[str]]:
    """A run whose form links its order to a customer: (run id, the link step's id, customer ids)."""
    collection = await owner.post(
        "/api/v1/collections",
        {
            "key": f"customers_{suffix}",
            "name": "Customers",
            "fields": [
                {"key": "name", "label": "Name", "type": "text"},
                {"key": "number", "label": "Customer number", "type": "text", "unique": True},
            ],
        },
    )
    assert collection.status_code == 201, collection.text
    ids = []
    for name, number in customers:
        made = await owner.post(
            f"/api/v1/collections/{collection.json()['id']}/records", {"values": {"name": name, "number": number}}
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    orders = await owner.post(
        "/api/v1/collections",
        {
            "key": f"orders_{suffix}",
            "name": "Orders",
            "fields": [
                {"key": "customer", "label": "Customer", "type": "relation", "target_collection": f"customers_{suffix}"}
            ],
        },
    )
    assert orders.status_code == 201, orders.text
    order = await owner.post(f"/api/v1/collections/{orders.json()['id']}/records", {"values": {}})
    flow = {
        "start": "link",
        "steps": [
            {
                "kind": "form",
                "key": "link",
                "title": "Link the customer",
                "owner": {"kind": "starter"},
                "fields": [{"key": "customer", "label": "Customer", "type": "relation", "target": "record"}],
            }
        ],
    }
    procedure_id, _ = await publish(owner, flow, collection_id=orders.json()["id"])
    run = await start(owner, procedure_id, record_id=order.json()["id"])
    return str(run["id"]), str(step_id(run, "link")), ids


async def test_a_record_link_finds_records_by_title_or_number(world: World) -> None:
    owner, _ = await world.signup(locale="en")
    suffix = uuid.uuid4().hex[:6]
    run_id, _link, (li, zhang) = await linked_run(owner, suffix, [("Ms Li", "C-1024"), ("Mr Zhang", "C-2048")])
    by_number = await owner.client.get(
        f"/runs/{run_id}/records", params={"field": "customer", "q": "2048", "for_field": "field-f_customer"}
    )
    assert by_number.status_code == 200
    assert f'data-value="{zhang}" data-label="Mr Zhang"' in by_number.text
    assert "Customer number C-2048" in by_number.text and "Ms Li" not in by_number.text
    by_title = await owner.client.get(f"/runs/{run_id}/records", params={"field": "customer", "q": "ms li"})
    assert f'data-value="{li}"' in by_title.text and "Mr Zhang" not in by_title.text
    # A field the run's form does not link finds nothing.
    other = await owner.client.get(f"/runs/{run_id}/records", params={"field": "nothing", "q": ""})
    assert other.status_code == 200 and "data-value" not in other.text
    # The form without scripts offers the records by title and key field.
    html = (await owner.client.get(f"/runs/{run_id}")).text
    assert re.search(r'<option value="' + zhang + r'"\s*>Mr Zhang · C-2048</option>', html)


async def test_another_workspace_reaches_no_upload_member_or_record(world: World) -> None:
    owner, _member, run, _ = await a_run(world)
    stored = (await upload(owner, run["id"], a_photo(320, 240))).json()
    stranger, _ = await world.signup(locale="en", display_name="Zhao Lei")
    # Through the owner's run: nothing at all.
    assert (await upload(stranger, run["id"], a_photo(64, 64))).status_code == 404
    assert (await stranger.client.get(f"/runs/{run['id']}/members", params={"q": ""})).status_code == 404
    assert (await stranger.client.get(f"/runs/{run['id']}/records", params={"field": "customer"})).status_code == 404
    assert (await stranger.client.get(stored["thumbnail"])).status_code == 404
    # Through their own run: only their own members and records, even under the same keys.
    suffix = uuid.uuid4().hex[:6]
    own_run, _link, _ = await linked_run(owner, suffix, [("Ms Li", "C-1024")])
    their_run, _link, _ = await linked_run(stranger, suffix, [("Mr Qian", "Q-1")])
    members = await stranger.client.get(f"/runs/{their_run}/members", params={"q": ""})
    assert "Zhao Lei" in members.text and "Li Wei" not in members.text and "Wang Fang" not in members.text
    assert "Wang" not in (await stranger.client.get(f"/runs/{their_run}/members", params={"q": "wang"})).text
    theirs = await stranger.client.get(f"/runs/{their_run}/records", params={"field": "customer", "q": ""})
    assert "Mr Qian" in theirs.text and "Ms Li" not in theirs.text
    ours = await owner.client.get(f"/runs/{own_run}/records", params={"field": "customer", "q": "Q-1"})
    assert "Mr Qian" not in ours.text
    # A file id of another workspace sent with a step is refused, never shown.
    pack = step_id(run, "pack")
    assert (await page_post(stranger, f"/runs/{run['id']}/steps/{pack}/complete")).status_code == 404
