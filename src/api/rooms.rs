//! `RoomService`: thin handlers over [`crate::rooms::Rooms`].

use tonic::{Request, Response, Status};

use super::{Api, principal};
use crate::clock::now_ms;
use crate::proto::{self, room_service_server::RoomService};

/// The `RoomService` handlers.
pub struct RoomsApi(pub Api);

#[tonic::async_trait]
impl RoomService for RoomsApi {
    async fn create_room(
        &self,
        req: Request<proto::CreateRoomRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let room = self
            .0
            .rooms
            .create(&who, &r.name, &r.topic, r.visibility, r.read_only, now_ms())
            .await?;
        Ok(Response::new(room))
    }

    async fn get_room(
        &self,
        req: Request<proto::GetRoomRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(self.0.rooms.get(&who, &req.get_ref().room_id)?))
    }

    async fn list_rooms(
        &self,
        req: Request<proto::ListRoomsRequest>,
    ) -> Result<Response<proto::ListRoomsResponse>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(proto::ListRoomsResponse { rooms: self.0.rooms.list(&who)? }))
    }

    async fn join_room(
        &self,
        req: Request<proto::JoinRoomRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(self.0.rooms.join(&who, &req.get_ref().room_id, now_ms()).await?))
    }

    async fn leave_room(
        &self,
        req: Request<proto::LeaveRoomRequest>,
    ) -> Result<Response<proto::LeaveRoomResponse>, Status> {
        let who = principal(&req)?;
        self.0.rooms.leave(&who, &req.get_ref().room_id, now_ms()).await?;
        Ok(Response::new(proto::LeaveRoomResponse {}))
    }

    async fn invite_member(
        &self,
        req: Request<proto::InviteMemberRequest>,
    ) -> Result<Response<proto::InviteMemberResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.rooms.invite(&who, &r.room_id, &r.user_id, now_ms()).await?;
        Ok(Response::new(proto::InviteMemberResponse {}))
    }

    async fn set_member_role(
        &self,
        req: Request<proto::SetMemberRoleRequest>,
    ) -> Result<Response<proto::Member>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(
            self.0.rooms.set_role(&who, &r.room_id, &r.user_id, r.role, now_ms()).await?,
        ))
    }

    async fn remove_member(
        &self,
        req: Request<proto::RemoveMemberRequest>,
    ) -> Result<Response<proto::RemoveMemberResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.rooms.remove(&who, &r.room_id, &r.user_id, r.ban, &r.reason, now_ms()).await?;
        Ok(Response::new(proto::RemoveMemberResponse {}))
    }

    async fn unban_member(
        &self,
        req: Request<proto::UnbanMemberRequest>,
    ) -> Result<Response<proto::UnbanMemberResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.rooms.unban(&who, &r.room_id, &r.user_id, now_ms()).await?;
        Ok(Response::new(proto::UnbanMemberResponse {}))
    }

    async fn list_members(
        &self,
        req: Request<proto::ListMembersRequest>,
    ) -> Result<Response<proto::ListMembersResponse>, Status> {
        let who = principal(&req)?;
        let mut members = self.0.rooms.members(&who, &req.get_ref().room_id)?;
        for m in &mut members {
            if let Some(u) = &m.user {
                let (status, last_seen) = self.0.presence.of(&u.id, m.last_seen_ms);
                m.presence = status as i32;
                m.last_seen_ms = last_seen;
            }
        }
        Ok(Response::new(proto::ListMembersResponse { members }))
    }

    async fn open_direct(
        &self,
        req: Request<proto::OpenDirectRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(self.0.rooms.open_direct(&who, &req.get_ref().user_id, now_ms()).await?))
    }

    async fn update_room(
        &self,
        req: Request<proto::UpdateRoomRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(
            self.0.rooms.update(&who, &r.room_id, r.topic, r.read_only, now_ms()).await?,
        ))
    }

    async fn mute_room(
        &self,
        req: Request<proto::MuteRoomRequest>,
    ) -> Result<Response<proto::Room>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(self.0.rooms.mute(&who, &r.room_id, r.muted, now_ms()).await?))
    }

    async fn list_room_audit(
        &self,
        req: Request<proto::ListRoomAuditRequest>,
    ) -> Result<Response<proto::ListRoomAuditResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let entries = self.0.rooms.audit(&who, &r.room_id, r.after_id, r.limit)?;
        Ok(Response::new(proto::ListRoomAuditResponse { entries }))
    }
}
