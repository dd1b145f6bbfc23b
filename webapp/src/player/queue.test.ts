import { describe, expect, it } from "vitest";
import { currentTrack, emptyQueue, formatTime, queueReducer, type Track } from "./queue";

const t = (id: string): Track => ({ id, title: id, artist: "a", durationMs: 1000 });
const ids = (s: { tracks: Track[] }) => s.tracks.map((x) => x.id);

describe("queue", () => {
  it("plays a list from an index and moves through it", () => {
    let s = queueReducer(emptyQueue, { type: "play", tracks: [t("a"), t("b"), t("c")], index: 1 });
    expect(currentTrack(s)?.id).toBe("b");
    s = queueReducer(s, { type: "next" });
    expect(currentTrack(s)?.id).toBe("c");
    // The end of the queue stays on the last track.
    expect(queueReducer(s, { type: "next" })).toBe(s);
    s = queueReducer(s, { type: "previous" });
    s = queueReducer(s, { type: "previous" });
    expect(currentTrack(s)?.id).toBe("a");
    expect(queueReducer(s, { type: "previous" }).index).toBe(0);
  });

  it("enqueues at the end and plays-next after the current track", () => {
    let s = queueReducer(emptyQueue, { type: "enqueue", tracks: [t("a")] });
    expect(currentTrack(s)?.id).toBe("a");
    s = queueReducer(s, { type: "enqueue", tracks: [t("b")] });
    s = queueReducer(s, { type: "playNext", tracks: [t("x")] });
    expect(ids(s)).toEqual(["a", "x", "b"]);
    expect(s.index).toBe(0);
  });

  it("keeps the current track when others are removed", () => {
    let s = queueReducer(emptyQueue, { type: "play", tracks: [t("a"), t("b"), t("c")], index: 1 });
    s = queueReducer(s, { type: "remove", index: 0 });
    expect(currentTrack(s)?.id).toBe("b");
    s = queueReducer(s, { type: "remove", index: 0 });
    expect(currentTrack(s)?.id).toBe("c");
    s = queueReducer(s, { type: "remove", index: 0 });
    expect(s).toEqual({ tracks: [], index: -1 });
    expect(queueReducer(s, { type: "remove", index: 3 })).toBe(s);
  });

  it("refuses jumps out of range and an empty play", () => {
    const s = queueReducer(emptyQueue, { type: "play", tracks: [t("a")] });
    expect(queueReducer(s, { type: "jump", index: 5 })).toBe(s);
    expect(queueReducer(s, { type: "play", tracks: [] })).toEqual(emptyQueue);
    expect(queueReducer(s, { type: "play", tracks: [t("q")], index: 9 }).index).toBe(0);
  });
});

describe("formatTime", () => {
  it.each([
    [0, "0:00"],
    [5.9, "0:05"],
    [65, "1:05"],
    [3600 + 62, "1:01:02"],
    [Number.NaN, "0:00"],
    [-3, "0:00"],
  ])("%s s is %s", (sec, want) => {
    expect(formatTime(sec)).toBe(want);
  });
});
