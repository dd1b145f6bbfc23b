// The play queue as a pure reducer, so that its rules are unit-tested
// without a browser: what plays next, what "previous" does, what happens
// when the current song is removed.

export interface Track {
  id: string;
  title: string;
  artist: string;
  album?: string;
  durationMs: number;
  /** Signed URLs of the cover: small for lists, larger for the player. */
  thumb?: string | null;
  cover?: string | null;
}

export interface QueueState {
  tracks: Track[];
  /** Position of the current track, or -1 when nothing is loaded. */
  index: number;
}

export type QueueAction =
  | { type: "play"; tracks: Track[]; index?: number }
  | { type: "enqueue"; tracks: Track[] }
  | { type: "playNext"; tracks: Track[] }
  | { type: "next" }
  | { type: "previous" }
  | { type: "jump"; index: number }
  | { type: "remove"; index: number }
  | { type: "clear" };

export const emptyQueue: QueueState = { tracks: [], index: -1 };

export function queueReducer(s: QueueState, a: QueueAction): QueueState {
  switch (a.type) {
    case "play": {
      if (a.tracks.length === 0) return emptyQueue;
      const index = Math.min(Math.max(a.index ?? 0, 0), a.tracks.length - 1);
      return { tracks: [...a.tracks], index };
    }
    case "enqueue": {
      const tracks = [...s.tracks, ...a.tracks];
      return { tracks, index: s.index < 0 && tracks.length > 0 ? 0 : s.index };
    }
    case "playNext": {
      const at = s.index + 1;
      const tracks = [...s.tracks.slice(0, at), ...a.tracks, ...s.tracks.slice(at)];
      return { tracks, index: s.index < 0 && tracks.length > 0 ? 0 : s.index };
    }
    case "next":
      // The end of the queue stops playback on the last track.
      return s.index + 1 < s.tracks.length ? { ...s, index: s.index + 1 } : s;
    case "previous":
      return s.index > 0 ? { ...s, index: s.index - 1 } : s;
    case "jump":
      return a.index >= 0 && a.index < s.tracks.length ? { ...s, index: a.index } : s;
    case "remove": {
      if (a.index < 0 || a.index >= s.tracks.length) return s;
      const tracks = s.tracks.filter((_, i) => i !== a.index);
      let index = s.index;
      if (a.index < s.index) index -= 1;
      else if (a.index === s.index && index >= tracks.length) index = tracks.length - 1;
      return { tracks, index };
    }
    case "clear":
      return emptyQueue;
  }
}

export function currentTrack(s: QueueState): Track | undefined {
  return s.index >= 0 ? s.tracks[s.index] : undefined;
}

/** `m:ss`, or `h:mm:ss` from an hour on; `0:00` for nonsense. */
export function formatTime(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "0:00";
  const t = Math.floor(seconds);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** "Previous" restarts the current song once it has played for a while. */
export const RESTART_AFTER_SECONDS = 3;
