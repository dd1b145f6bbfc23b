// The shell: navigation, routes, the player bar.

import { NavLink, Navigate, Route, Routes, useNavigate } from "react-router";
import { useMutation } from "urql";
import { graphql } from "./gql";
import { PlayerProvider } from "./player/Player";
import { useSession } from "./session";
import { AccountForm } from "./pages/Account";
import { AlbumPage, Albums, ArtistPage, Artists, Home, Songs } from "./pages/Browse";
import { Cluster } from "./pages/Cluster";
import { Me } from "./pages/Me";
import { PlaylistPage, Playlists } from "./pages/Playlists";
import { Search } from "./pages/Search";
import { Upload } from "./pages/Upload";
import type { ReactNode } from "react";

const Logout = graphql(`
  mutation Logout {
    logout
  }
`);

function Nav() {
  const { user, signOut } = useSession();
  const [, logout] = useMutation(Logout);
  const navigate = useNavigate();
  return (
    <nav className="side" aria-label="Main">
      <div className="brand">Rondo</div>
      <ul>
        <li>
          <NavLink to="/" end>
            Home
          </NavLink>
        </li>
        <li>
          <NavLink to="/search">Search</NavLink>
        </li>
        <li>
          <NavLink to="/songs">Songs</NavLink>
        </li>
        <li>
          <NavLink to="/albums">Albums</NavLink>
        </li>
        <li>
          <NavLink to="/artists">Artists</NavLink>
        </li>
        {user && (
          <li>
            <NavLink to="/playlists">Playlists</NavLink>
          </li>
        )}
        {user?.role === "ADMIN" && (
          <>
            <li>
              <NavLink to="/upload">Upload</NavLink>
            </li>
            <li>
              <NavLink to="/cluster">Cluster</NavLink>
            </li>
          </>
        )}
      </ul>
      <div className="account">
        {user ? (
          <>
            <NavLink to="/account" className="sub" data-testid="user-name">
              {user.name}
            </NavLink>
            <button
              type="button"
              onClick={async () => {
                await logout({});
                signOut();
                navigate("/");
              }}
            >
              Log out
            </button>
          </>
        ) : (
          <>
            <NavLink to="/login">Log in</NavLink>
            <NavLink to="/register">Register</NavLink>
          </>
        )}
      </div>
    </nav>
  );
}

function NeedsUser({ admin = false, children }: { admin?: boolean; children: ReactNode }) {
  const { user } = useSession();
  if (!user) return <Navigate to="/login" replace />;
  if (admin && user.role !== "ADMIN") return <p className="error">This page is for admins.</p>;
  return <>{children}</>;
}

export function App() {
  return (
    <PlayerProvider>
      <div className="layout">
        <a className="skip" href="#main">
          Skip to content
        </a>
        <Nav />
        <main id="main" tabIndex={-1}>
          <Routes>
            <Route path="/" element={<Home />} />
            <Route path="/search" element={<Search />} />
            <Route path="/songs" element={<Songs />} />
            <Route path="/albums" element={<Albums />} />
            <Route path="/albums/:id" element={<AlbumPage />} />
            <Route path="/artists" element={<Artists />} />
            <Route path="/artists/:id" element={<ArtistPage />} />
            <Route path="/login" element={<AccountForm mode="login" />} />
            <Route path="/register" element={<AccountForm mode="register" />} />
            <Route
              path="/account"
              element={
                <NeedsUser>
                  <Me />
                </NeedsUser>
              }
            />
            <Route
              path="/playlists"
              element={
                <NeedsUser>
                  <Playlists />
                </NeedsUser>
              }
            />
            <Route
              path="/playlists/:id"
              element={
                <NeedsUser>
                  <PlaylistPage />
                </NeedsUser>
              }
            />
            <Route
              path="/upload"
              element={
                <NeedsUser admin>
                  <Upload />
                </NeedsUser>
              }
            />
            <Route
              path="/cluster"
              element={
                <NeedsUser admin>
                  <Cluster />
                </NeedsUser>
              }
            />
            <Route path="*" element={<p>Nothing here.</p>} />
          </Routes>
        </main>
      </div>
    </PlayerProvider>
  );
}
