import { describe, expect, it } from "vitest";
import { playThreshold } from "./Player";

describe("a play counts", () => {
  it("after half the song, or four minutes of a long one", () => {
    expect(playThreshold(180)).toBe(90);
    expect(playThreshold(600)).toBe(240);
    expect(playThreshold(0)).toBe(0.5);
  });
});
